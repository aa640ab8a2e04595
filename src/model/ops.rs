//! The network's convolutions as a burn backend extension with their own backward pass.
//!
//! [`conv3d`] is what [`super::ApeNet`] calls for every convolution. It goes through
//! [`ApeConvBackend`], an extension of burn's backend trait (`#[backend_extension]`), whose
//! default bodies are burn's own `conv3d` and its two backward functions; the trait is
//! specialised where ape has something faster:
//!
//! - `Flex` (burn's CPU backend, which training uses): forward and both backward convolutions
//!   on [`kernels`]: channels-last activations and register-blocked AVX-512 products where the
//!   CPU has them (`cpu_net`'s kernel), `gemm` elsewhere, threads over tiles of voxels.
//! - `Autodiff<B>` for any such `B`: the backward step calls `B`'s two backward functions, so
//!   that training on `Autodiff<Flex>` runs the fast kernels forward and backward.
//! - `Cube` (wgpu): ape's CubeCL kernels ([`cube`]), direct convolutions forward and backward,
//!   when [`set_cube_kernels`] says so; burn's own convolutions otherwise.
//!
//! The fast path covers what the network uses (and a changed network would): stride-1 "same"
//! convolutions of odd kernels (3×3×3), and convolutions whose stride equals their kernel with
//! no padding (the 4×4×4 stem, the 2×2×2 downsamplings, 1×1×1). Anything else, or a tensor
//! that is not f32, takes burn's convolution. [`set_enabled`] turns the fast path off for the
//! whole process (the benchmark compares the two; tests compare every op with burn's).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

pub mod cube;
pub mod kernels;
pub mod norm;
#[cfg(target_arch = "x86_64")]
mod patches;
mod transpose;
pub mod upsample;
#[cfg(target_arch = "x86_64")]
mod weight_grad;

static ENABLED: AtomicBool = AtomicBool::new(true);
/// 0: not yet decided (read `APE_CUBE_KERNELS` on first use), 1: off, 2: on.
static CUBE_KERNELS: AtomicU8 = AtomicU8::new(0);

/// Turns ape's convolutions on or off for the whole process (on by default); off, every
/// convolution is burn's own.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether ape's convolutions are on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Chooses between ape's CubeCL convolutions and burn's on the wgpu backend for the whole
/// process. Off by default: burn's own (implicit GEMM, autotuned per device) have not yet been
/// timed against ape's on a GPU; `APE_CUBE_KERNELS=1` turns them on for the trainer and benches.
pub fn set_cube_kernels(on: bool) {
    CUBE_KERNELS.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether ape's CubeCL convolutions run on the wgpu backend: as [`set_cube_kernels`] last
/// said, else as the environment says (`APE_CUBE_KERNELS=1`).
pub fn cube_kernels() -> bool {
    match CUBE_KERNELS.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("APE_CUBE_KERNELS").is_ok_and(|v| v == "1");
            // A racing set_cube_kernels wins over the environment.
            let _ = CUBE_KERNELS.compare_exchange(
                0,
                if on { 2 } else { 1 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            CUBE_KERNELS.load(Ordering::Relaxed) == 2
        }
        state => state == 2,
    }
}

/// The values of an f32 `Flex` tensor in row-major order: borrowed when it is contiguous, else
/// one contiguous copy; `None` for other dtypes. What every op of ape's on `Flex` reads.
pub fn flex_values(t: &burn::backend::flex::FlexTensor) -> Option<std::borrow::Cow<'_, [f32]>> {
    use burn::backend::DType;
    if t.dtype() != DType::F32 {
        return None;
    }
    Some(match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => std::borrow::Cow::Borrowed(s),
        // One copy: the contiguous tensor's buffer becomes the vector.
        _ => std::borrow::Cow::Owned(t.to_contiguous().into_data().try_into_vec::<f32>().ok()?),
    })
}

/// A cubic convolution's geometry: the same stride and padding along every axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    fn options(self) -> ConvOptions<3> {
        ConvOptions::new([self.stride; 3], [self.padding; 3], [1; 3], 1)
    }
}

/// The convolution of `x` `[b, cin, d, h, w]` by `weight` `[cout, cin, k, k, k]` as a
/// [`kernels::ConvShape`]: `None` for other ranks, channel counts that disagree, a kernel that
/// is not cubic, or a stride or kernel of 0.
fn conv_shape(x: &[usize], w: &[usize], g: ConvGeometry) -> Option<kernels::ConvShape> {
    let (&[batch, cin, d, h, wd], &[cout, wcin, k, k2, k3]) = (x, w) else {
        return None;
    };
    (wcin == cin && k2 == k && k3 == k && k > 0 && g.stride > 0).then_some(kernels::ConvShape {
        batch,
        cin,
        cout,
        kernel: k,
        stride: g.stride,
        padding: g.padding,
        input: [d, h, wd],
    })
}

/// A 3-D convolution without bias: `x` `[b, cin, d, h, w]`, `weight` `[cout, cin, k, k, k]`,
/// the same stride and padding along every axis. Differentiable on every backend.
pub fn conv3d(x: Tensor<5>, weight: Tensor<5>, stride: usize, padding: usize) -> Tensor<5> {
    let geometry = ConvGeometry { stride, padding };
    if !enabled() {
        return burn::tensor::module::conv3d(x, weight, None, geometry.options());
    }
    Tensor::from_dispatch(<Dispatch as ApeConvBackend>::ape_conv3d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        padding,
    ))
}

/// The convolutions of the APE network, with their backward functions. The defaults are
/// burn's; `Flex` has ape's kernels, `Autodiff` its own backward step.
#[backend_extension(Flex, Cube, Autodiff)]
pub trait ApeConvBackend: Backend {
    /// `conv3d(x, weight)` without bias.
    fn ape_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        Self::conv3d(x, weight, None, geometry.options())
    }

    /// The gradient with respect to `x`, given the output's gradient `grad`.
    fn ape_conv3d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        Self::conv3d_x_backward(x, weight, grad, geometry.options())
    }

    /// The gradient with respect to `weight`, given the output's gradient `grad`.
    fn ape_conv3d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        Self::conv3d_weight_backward(x, weight, grad, geometry.options())
    }
}

impl ApeConvBackend for Cube {
    fn ape_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        if cube_kernels()
            && let Some(out) = cube::forward(x.clone(), weight.clone(), geometry)
        {
            return out;
        }
        Self::conv3d(x, weight, None, geometry.options())
    }

    fn ape_conv3d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        if cube_kernels()
            && let Some(out) = cube::x_backward(x.clone(), weight.clone(), grad.clone(), geometry)
        {
            return out;
        }
        Self::conv3d_x_backward(x, weight, grad, geometry.options())
    }

    fn ape_conv3d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        if cube_kernels()
            && let Some(out) =
                cube::weight_backward(x.clone(), weight.clone(), grad.clone(), geometry)
        {
            return out;
        }
        Self::conv3d_weight_backward(x, weight, grad, geometry.options())
    }
}

impl ApeConvBackend for Flex {
    fn ape_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        match flex::forward(&x, &weight, geometry) {
            Some(out) => out,
            None => Self::conv3d(x, weight, None, geometry.options()),
        }
    }

    fn ape_conv3d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        match flex::x_backward(&x, &weight, &grad, geometry) {
            Some(out) => out,
            None => Self::conv3d_x_backward(x, weight, grad, geometry.options()),
        }
    }

    fn ape_conv3d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        match flex::weight_backward(&x, &weight, &grad, geometry) {
            Some(out) => out,
            None => Self::conv3d_weight_backward(x, weight, grad, geometry.options()),
        }
    }
}

/// The backward step of [`ApeConvBackend::ape_conv3d`] under autodiff.
#[derive(Debug)]
struct ApeConv3dBackward;

impl<B: ApeConvBackend> Backward<B, 2> for ApeConv3dBackward {
    type State = (NodeId, NodeId, ConvGeometry);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, g) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        if let Some(node) = node_x {
            let dx = B::ape_conv3d_x_backward(
                x.clone(),
                weight.clone(),
                grad.clone(),
                g.stride,
                g.padding,
            );
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            let dw = B::ape_conv3d_weight_backward(x, weight, grad, g.stride, g.padding);
            grads.register::<B>(node.id, dw);
        }
    }
}

impl<B: ApeConvBackend, C: CheckpointStrategy> ApeConvBackend for Autodiff<B, C> {
    fn ape_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let geometry = ConvGeometry { stride, padding };
        match ApeConv3dBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out =
                    B::ape_conv3d(x.into_primitive(), weight.into_primitive(), stride, padding);
                prep.finish((x_state, weight_state, geometry), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::ape_conv3d(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                padding,
            )),
        }
    }
}

/// `Flex` tensors to and from the slices [`kernels`] compute on.
mod flex {
    use burn::backend::flex::FlexTensor;
    use burn::backend::{TensorData, TensorMetadata};

    use super::ConvGeometry;
    use super::kernels::{self, ConvShape};

    /// The values of an f32 tensor, row-major, and its shape; `None` for other dtypes.
    fn values(t: &FlexTensor) -> Option<(std::borrow::Cow<'_, [f32]>, Vec<usize>)> {
        Some((super::flex_values(t)?, t.shape().to_vec()))
    }

    fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// The convolution's shape, when the fast path covers it.
    fn shape_of(x: &[usize], w: &[usize], g: ConvGeometry) -> Option<ConvShape> {
        super::conv_shape(x, w, g).filter(kernels::covers)
    }

    pub fn forward(x: &FlexTensor, w: &FlexTensor, g: ConvGeometry) -> Option<FlexTensor> {
        let (xv, xs) = values(x)?;
        let (wv, ws) = values(w)?;
        let shape = shape_of(&xs, &ws, g)?;
        let out = kernels::forward(&shape, &xv, &wv, kernels::Path::Fastest)?;
        Some(tensor(out, shape.output_dims().to_vec()))
    }

    pub fn x_backward(
        x: &FlexTensor,
        w: &FlexTensor,
        grad: &FlexTensor,
        g: ConvGeometry,
    ) -> Option<FlexTensor> {
        let (wv, ws) = values(w)?;
        let (gv, gs) = values(grad)?;
        let shape = shape_of(&x.shape().to_vec(), &ws, g)?;
        (gs == shape.output_dims()).then_some(())?;
        let out = kernels::x_backward(&shape, &wv, &gv, kernels::Path::Fastest)?;
        Some(tensor(out, shape.input_dims().to_vec()))
    }

    pub fn weight_backward(
        x: &FlexTensor,
        w: &FlexTensor,
        grad: &FlexTensor,
        g: ConvGeometry,
    ) -> Option<FlexTensor> {
        let (xv, xs) = values(x)?;
        let (gv, gs) = values(grad)?;
        let ws = w.shape().to_vec();
        let shape = shape_of(&xs, &ws, g)?;
        (gs == shape.output_dims()).then_some(())?;
        let out = kernels::weight_backward(&shape, &xv, &gv, kernels::Path::Fastest)?;
        Some(tensor(out, ws))
    }
}

#[cfg(test)]
mod tests {
    use super::kernels::{self, ConvShape, Path};
    use super::*;
    use crate::model::test_values::{read, relative, values};
    use burn::tensor::{Device, TensorData};

    /// Output, input gradient and weight gradient of `Σ r · conv(x, w)` on autodiff flex.
    fn run(
        s: &ConvShape,
        x: &[f32],
        w: &[f32],
        r: &[f32],
        ape: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        run_on(&Device::flex(), s, x, w, r, ape)
    }

    /// [`run`] on any device (under autodiff): `ape` through [`ApeConvBackend`], else burn's
    /// own convolution.
    fn run_on(
        device: &Device,
        s: &ConvShape,
        x: &[f32],
        w: &[f32],
        r: &[f32],
        ape: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let device = device.clone().autodiff();
        let x = Tensor::<5>::from_data(TensorData::new(x.to_vec(), s.input_dims()), &device)
            .require_grad();
        let w = Tensor::<5>::from_data(
            TensorData::new(w.to_vec(), [s.cout, s.cin, s.kernel, s.kernel, s.kernel]),
            &device,
        )
        .require_grad();
        let r = Tensor::<5>::from_data(TensorData::new(r.to_vec(), s.output_dims()), &device);
        let out = if ape {
            Tensor::from_dispatch(<Dispatch as ApeConvBackend>::ape_conv3d(
                x.clone().into_dispatch(),
                w.clone().into_dispatch(),
                s.stride,
                s.padding,
            ))
        } else {
            let geometry = ConvGeometry {
                stride: s.stride,
                padding: s.padding,
            };
            burn::tensor::module::conv3d(x.clone(), w.clone(), None, geometry.options())
        };
        let grads = (out.clone() * r).sum().backward();
        let dx = x.grad(&grads).expect("x gradient");
        let dw = w.grad(&grads).expect("w gradient");
        (read(out), read(dx), read(dw))
    }

    /// The network's kinds of convolution on odd shapes: same 3×3×3 (channel counts the
    /// AVX-512 kernel takes and ones it does not), the stem, a downsampling, 1×1×1; sizes not
    /// multiples of the stride.
    fn shapes() -> Vec<ConvShape> {
        let conv = |batch, cin, cout, kernel, stride, padding, input| ConvShape {
            batch,
            cin,
            cout,
            kernel,
            stride,
            padding,
            input,
        };
        vec![
            conv(2, 5, 16, 3, 1, 1, [5, 7, 9]),
            conv(3, 16, 32, 3, 1, 1, [3, 6, 5]),
            conv(1, 32, 16, 3, 1, 1, [4, 5, 3]),
            conv(1, 64, 64, 3, 1, 1, [3, 4, 5]),
            conv(2, 3, 7, 3, 1, 1, [1, 4, 6]),
            conv(2, 1, 16, 4, 4, 0, [8, 12, 9]),
            conv(2, 3, 5, 2, 2, 0, [6, 5, 7]),
            conv(1, 16, 32, 2, 2, 0, [5, 7, 6]),
            conv(2, 32, 64, 2, 2, 0, [4, 5, 3]),
            conv(1, 3, 48, 2, 2, 0, [3, 4, 5]),
            conv(3, 7, 3, 1, 1, 0, [3, 4, 5]),
        ]
    }

    #[test]
    fn every_op_and_both_gradients_equal_burns_autodiff() {
        for (i, s) in shapes().into_iter().enumerate() {
            assert!(kernels::covers(&s), "{s:?}");
            let seed = i as u64 * 3;
            let x = values(s.input_dims().iter().product(), seed + 1);
            let w = values(s.cout * s.cin * s.kernel.pow(3), seed + 2);
            let r = values(s.output_dims().iter().product(), seed + 3);
            let (out, dx, dw) = run(&s, &x, &w, &r, true);
            let (out_ref, dx_ref, dw_ref) = run(&s, &x, &w, &r, false);
            for (name, ours, reference) in [
                ("forward", &out, &out_ref),
                ("input gradient", &dx, &dx_ref),
                ("weight gradient", &dw, &dw_ref),
            ] {
                let e = relative(ours, reference);
                assert!(e < 1e-4, "{s:?} {name}: relative error {e}");
            }
        }
    }

    /// `gemm` alone (as on a CPU without AVX-512) and the fastest path both equal burn.
    #[test]
    fn the_portable_kernels_equal_burn_too() {
        for (i, s) in shapes().into_iter().enumerate() {
            let seed = 100 + i as u64 * 3;
            let x = values(s.input_dims().iter().product(), seed + 1);
            let w = values(s.cout * s.cin * s.kernel.pow(3), seed + 2);
            let r = values(s.output_dims().iter().product(), seed + 3);
            let (out_ref, dx_ref, dw_ref) = run(&s, &x, &w, &r, false);
            for path in [Path::Portable, Path::Fastest] {
                let out = kernels::forward(&s, &x, &w, path).expect("covered");
                let dx = kernels::x_backward(&s, &w, &r, path).expect("covered");
                let dw = kernels::weight_backward(&s, &x, &r, path).expect("covered");
                for (name, ours, reference) in [
                    ("forward", &out, &out_ref),
                    ("input gradient", &dx, &dx_ref),
                    ("weight gradient", &dw, &dw_ref),
                ] {
                    let e = relative(ours, reference);
                    assert!(e < 1e-4, "{path:?} {s:?} {name}: relative error {e}");
                }
            }
        }
    }

    /// ape's CubeCL kernels on wgpu (Mesa's lavapipe without a GPU) equal burn's own wgpu
    /// convolution and its gradients, on the network's kinds of convolution and on strides and
    /// paddings the CPU kernels do not cover.
    #[test]
    fn cube_kernels_equal_burn_on_wgpu() {
        let gpu = match crate::model::backend::wgpu() {
            Ok(gpu) => gpu,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("no wgpu adapter under CI=true: {e}")
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED cube_kernels_equal_burn_on_wgpu: {e} (install mesa-vulkan-drivers)"
                );
                return;
            }
        };
        set_cube_kernels(true);
        let mut cases = shapes();
        cases.extend([
            ConvShape {
                batch: 2,
                cin: 3,
                cout: 4,
                kernel: 3,
                stride: 2,
                padding: 1,
                input: [5, 6, 7],
            },
            ConvShape {
                batch: 1,
                cin: 2,
                cout: 6,
                kernel: 2,
                stride: 1,
                padding: 0,
                input: [3, 5, 4],
            },
        ]);
        for (i, s) in cases.into_iter().enumerate() {
            let seed = 500 + i as u64 * 3;
            let x = values(s.input_dims().iter().product(), seed + 1);
            let w = values(s.cout * s.cin * s.kernel.pow(3), seed + 2);
            let r = values(s.output_dims().iter().product(), seed + 3);
            let ours = run_on(&gpu.device, &s, &x, &w, &r, true);
            let reference = run_on(&gpu.device, &s, &x, &w, &r, false);
            for (name, ours, reference) in [
                ("forward", &ours.0, &reference.0),
                ("input gradient", &ours.1, &reference.1),
                ("weight gradient", &ours.2, &reference.2),
            ] {
                let e = relative(ours, reference);
                assert!(
                    e < 1e-4,
                    "{} {s:?} {name}: relative error {e}",
                    gpu.description
                );
            }
        }
    }

    /// What the kernels do not cover goes to burn's convolution, with the same result.
    #[test]
    fn uncovered_geometries_fall_back_to_burn() {
        let s = ConvShape {
            batch: 1,
            cin: 2,
            cout: 3,
            kernel: 3,
            stride: 2,
            padding: 1,
            input: [5, 6, 7],
        };
        assert!(!kernels::covers(&s));
        let x = values(s.input_dims().iter().product(), 7);
        let w = values(s.cout * s.cin * 27, 8);
        let device = Device::flex().autodiff();
        let xt = Tensor::<5>::from_data(TensorData::new(x, s.input_dims()), &device);
        let wt = Tensor::<5>::from_data(TensorData::new(w, [3, 2, 3, 3, 3]), &device);
        let ours = read(conv3d(xt.clone(), wt.clone(), 2, 1));
        let geometry = ConvGeometry {
            stride: 2,
            padding: 1,
        };
        let reference = read(burn::tensor::module::conv3d(
            xt,
            wt,
            None,
            geometry.options(),
        ));
        assert!(relative(&ours, &reference) < 1e-6);
    }
}
