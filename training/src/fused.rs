//! The distance term of the loss as one op on burn's CPU backend, with its own backward pass.
//!
//! `mean over i, j of (‖a_i − b_j‖ − ‖p_i − p_j‖)²` over N = pairs × positives (4,096 at 8 pairs
//! of 512) goes through an N × N target matrix and six N × N tensors each way when written with
//! burn's tensor operations: most of a step's loss time. Here it is one pass over the rows, in
//! parallel, forward, with each target distance computed where it is needed from the positions
//! `p` (normalised and weighted, `loss::target_positions`); and one backward pass that gives
//! both gradients (t_ij = ‖p_i − p_j‖):
//! ∂/∂a_i = Σ_j w_ij (a_i − b_j), ∂/∂b_j = Σ_i w_ij (b_j − a_i), w_ij = 2 (d_ij − t_ij) / (N² d_ij).
//!
//! A backend extension (`#[backend_extension(Flex, Autodiff)]`) like `ape::model::ops`; the loss
//! takes it only on the CPU backend (`applies`), and burn's tensor operations elsewhere.
//! Distances below √1e-9 count as √1e-9 with no gradient, as `loss::pairwise_distances` does.
//!
//! The columns (b_j, p_j) are held as coordinate arrays and visited in blocks of [`LANES`], each
//! row's sums kept in as many partial sums, so that the inner loops compile to vector code: the
//! term and its gradients in about half the time of a loop over 3-vectors (Session 16).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::backend_extension;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorData};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

/// Squared distances under this count as this, with no gradient (as burn's `clamp_min`).
const FLOOR: f32 = 1e-9;

/// Whether the fused op computes the distance term for tensors on `device`.
pub fn applies(device: &Device) -> bool {
    *device == Device::flex() && ape::model::ops::enabled()
}

/// `mean over i, j of (‖a_i − b_j‖ − ‖p_i − p_j‖)²`: `a`, `b`, `positions` `[N, 3]`; `[1]`.
pub fn distance_term(a: Tensor<2>, b: Tensor<2>, positions: Tensor<2>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as DistanceLossBackend>::distance_loss(
        a.into_dispatch(),
        b.into_dispatch(),
        positions.into_dispatch(),
    ))
}

/// The distance term as a backend operation (`target` are the positions p).
#[backend_extension(Flex, Autodiff)]
pub trait DistanceLossBackend: Backend {
    fn distance_loss(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        target: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The gradients of [`DistanceLossBackend::distance_loss`] times the upstream gradient `grad`.
pub trait DistanceLossGrads: Backend {
    fn distance_loss_grads(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        target: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The f32 values of a tensor (contiguous copy when needed); empty for other dtypes.
fn values(t: &FlexTensor) -> Vec<f32> {
    ape::model::ops::flex_values(t).map_or_else(Vec::new, std::borrow::Cow::into_owned)
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The three slices when their sizes agree: (a, b, positions, N).
fn inputs(a: &FlexTensor, b: &FlexTensor, p: &FlexTensor) -> (Vec<f32>, Vec<f32>, Vec<f32>, usize) {
    let (a, b, p) = (values(a), values(b), values(p));
    let n = a.len() / 3;
    if a.len() != 3 * n || b.len() != 3 * n || p.len() != 3 * n {
        return (Vec::new(), Vec::new(), Vec::new(), 0);
    }
    (a, b, p, n)
}

/// Lanes of the inner loops: each row's sums are kept in this many partial sums, so that the
/// loop over j runs on whole vectors (16 f32 fill an AVX-512 register, two AVX2 ones).
const LANES: usize = 16;

/// `[N, 3]` points as three coordinate arrays, padded to a whole number of lanes: the inner
/// loops over j read whole vectors with no remainder. `valid[j]` is 1 for a real point and 0 for
/// padding, so padded columns weigh nothing.
struct Columns {
    coords: [Vec<f32>; 3],
    valid: Vec<f32>,
}

impl Columns {
    fn of(points: &[f32]) -> Self {
        let n = points.len() / 3;
        let padded = n.div_ceil(LANES) * LANES;
        let coords = [0, 1, 2].map(|c| {
            let mut v: Vec<f32> = points.chunks_exact(3).map(|p| p[c]).collect();
            v.resize(padded, 0.0);
            v
        });
        let mut valid = vec![1.0f32; n];
        valid.resize(padded, 0.0);
        Self { coords, valid }
    }

    fn lanes(&self) -> impl Iterator<Item = [&[f32; LANES]; 4]> {
        let [x, y, z] = &self.coords;
        let (x, _) = x.as_chunks::<LANES>();
        let (y, _) = y.as_chunks::<LANES>();
        let (z, _) = z.as_chunks::<LANES>();
        let (v, _) = self.valid.as_chunks::<LANES>();
        x.iter()
            .zip(y)
            .zip(z)
            .zip(v)
            .map(|(((x, y), z), v)| [x, y, z, v])
    }
}

/// For one row (a_i, p_i) and one block of columns (b_j, p_j): the predicted distances
/// ‖a_i − b_j‖ (squares under [`FLOOR`] count as it), the target distances ‖p_i − p_j‖, and 1
/// where the prediction was not clamped (and the column is real), else 0. All in f32: the
/// positions are normalised (a few units), where f32 differs from `loss::target_distances`'
/// f64 by about 1e-7 relative, and f64 lanes would halve the vectors' width.
#[inline(always)]
fn block(
    ai: [f32; 3],
    pi: [f32; 3],
    b: [&[f32; LANES]; 4],
    p: [&[f32; LANES]; 4],
) -> ([f32; LANES], [f32; LANES], [f32; LANES]) {
    let (mut d, mut t, mut free) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
    for l in 0..LANES {
        let q = [ai[0] - b[0][l], ai[1] - b[1][l], ai[2] - b[2][l]];
        let sq = q[0] * q[0] + q[1] * q[1] + q[2] * q[2];
        d[l] = sq.max(FLOOR).sqrt();
        free[l] = if sq >= FLOOR { b[3][l] } else { 0.0 };
        let e = [pi[0] - p[0][l], pi[1] - p[1][l], pi[2] - p[2][l]];
        t[l] = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]).sqrt();
    }
    (d, t, free)
}

fn row(v: &[f32]) -> [f32; 3] {
    [v[0], v[1], v[2]]
}

/// Σ_j (d_ij − t_ij)² over every column, for row i (a_i, p_i).
#[inline(always)]
fn row_loss(ai: [f32; 3], pi: [f32; 3], bc: &Columns, pc: &Columns) -> f64 {
    let mut sums = [0.0f64; LANES];
    for (bj, pj) in bc.lanes().zip(pc.lanes()) {
        let (d, t, _) = block(ai, pi, bj, pj);
        for l in 0..LANES {
            // Padded columns are masked by p's validity (b's is the same).
            let e = (d[l] - t[l]) * pj[3][l];
            sums[l] += f64::from(e * e);
        }
    }
    sums.iter().sum::<f64>()
}

/// For a chunk of rows: their a-gradients, and their share of the b-gradients' two sums,
/// Σ_i w_ij and Σ_i w_ij a_i, per column j (four column arrays).
#[inline(always)]
fn chunk_grads(
    a_rows: &[f32],
    p_rows: &[f32],
    bc: &Columns,
    pc: &Columns,
    scale: f32,
) -> (Vec<f32>, [Vec<f32>; 4]) {
    let padded = bc.valid.len();
    let mut ga = vec![0.0f32; a_rows.len()];
    let mut columns: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0; padded]);
    for ((ai, pi), g) in a_rows
        .chunks_exact(3)
        .zip(p_rows.chunks_exact(3))
        .zip(ga.chunks_exact_mut(3))
    {
        let (ai, pi) = (row(ai), row(pi));
        let mut wsum = [0.0f32; LANES];
        let mut wb = [[0.0f32; LANES]; 3];
        let [cw, cx, cy, cz] = &mut columns;
        let (cw, _) = cw.as_chunks_mut::<LANES>();
        let (cx, _) = cx.as_chunks_mut::<LANES>();
        let (cy, _) = cy.as_chunks_mut::<LANES>();
        let (cz, _) = cz.as_chunks_mut::<LANES>();
        let out = cw.iter_mut().zip(cx).zip(cy).zip(cz);
        for ((bj, pj), (((cw, cx), cy), cz)) in bc.lanes().zip(pc.lanes()).zip(out) {
            let (d, t, free) = block(ai, pi, bj, pj);
            for l in 0..LANES {
                let w = scale * (d[l] - t[l]) / d[l] * free[l];
                wsum[l] += w;
                for c in 0..3 {
                    wb[c][l] += w * bj[c][l];
                }
                cw[l] += w;
                cx[l] += w * ai[0];
                cy[l] += w * ai[1];
                cz[l] += w * ai[2];
            }
        }
        let wsum: f32 = wsum.iter().sum();
        for c in 0..3 {
            g[c] = wsum * ai[c] - wb[c].iter().sum::<f32>();
        }
    }
    (ga, columns)
}

/// [`row_loss`] and [`chunk_grads`] compiled for AVX-512 where the CPU has it, chosen at run
/// time: the default x86-64 target has SSE2 only, and there these loops (two square roots per
/// pair) stay scalar. No fused multiply-adds are formed either way (Rust does not contract),
/// so both give the same values.
#[allow(unsafe_code)]
mod wide {
    use super::Columns;

    #[cfg(target_arch = "x86_64")]
    fn avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn row_loss_avx512(ai: [f32; 3], pi: [f32; 3], bc: &Columns, pc: &Columns) -> f64 {
        super::row_loss(ai, pi, bc, pc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn chunk_grads_avx512(
        a_rows: &[f32],
        p_rows: &[f32],
        bc: &Columns,
        pc: &Columns,
        scale: f32,
    ) -> (Vec<f32>, [Vec<f32>; 4]) {
        super::chunk_grads(a_rows, p_rows, bc, pc, scale)
    }

    pub(super) fn row_loss(ai: [f32; 3], pi: [f32; 3], bc: &Columns, pc: &Columns) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: the CPU has AVX-512F (checked just now).
            return unsafe { row_loss_avx512(ai, pi, bc, pc) };
        }
        super::row_loss(ai, pi, bc, pc)
    }

    pub(super) fn chunk_grads(
        a_rows: &[f32],
        p_rows: &[f32],
        bc: &Columns,
        pc: &Columns,
        scale: f32,
    ) -> (Vec<f32>, [Vec<f32>; 4]) {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: the CPU has AVX-512F (checked just now).
            return unsafe { chunk_grads_avx512(a_rows, p_rows, bc, pc, scale) };
        }
        super::chunk_grads(a_rows, p_rows, bc, pc, scale)
    }
}

impl DistanceLossBackend for Flex {
    fn distance_loss(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        target: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (a, b, p, n) = inputs(&a, &b, &target);
        let (bc, pc) = (Columns::of(&b), Columns::of(&p));
        let total: f64 = a
            .par_chunks(3)
            .zip(p.par_chunks(3))
            .map(|(ai, pi)| wide::row_loss(row(ai), row(pi), &bc, &pc))
            .sum();
        let mean = if n == 0 {
            f32::NAN
        } else {
            (total / (n * n) as f64) as f32
        };
        tensor(vec![mean], vec![1])
    }
}

impl DistanceLossGrads for Flex {
    fn distance_loss_grads(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        target: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let upstream = values(&grad).first().copied().unwrap_or(0.0);
        let (a, b, p, n) = inputs(&a, &b, &target);
        let scale = 2.0 * upstream / (n * n).max(1) as f32;
        let (bc, pc) = (Columns::of(&b), Columns::of(&p));
        let padded = bc.valid.len();
        // Rows in chunks: each chunk gives its rows' a-gradients and its share of the
        // b-gradients' two sums, Σ_i w_ij and Σ_i w_ij a_i, per column j (four column arrays).
        let rows = n.div_ceil(4 * rayon::current_num_threads()).max(1);
        let parts: Vec<(Vec<f32>, [Vec<f32>; 4])> = a
            .par_chunks(3 * rows)
            .zip(p.par_chunks(3 * rows))
            .map(|(a_rows, p_rows)| wide::chunk_grads(a_rows, p_rows, &bc, &pc, scale))
            .collect();
        let mut ga = Vec::with_capacity(3 * n);
        let mut columns: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0; padded]);
        for (part_a, part_columns) in parts {
            ga.extend(part_a);
            for (total, part) in columns.iter_mut().zip(&part_columns) {
                total.iter_mut().zip(part).for_each(|(u, v)| *u += v);
            }
        }
        let [cw, cx, cy, cz] = &columns;
        let gb: Vec<f32> = b
            .chunks_exact(3)
            .enumerate()
            .flat_map(|(j, bj)| [(0, cx), (1, cy), (2, cz)].map(|(c, ca)| cw[j] * bj[c] - ca[j]))
            .collect();
        (tensor(ga, vec![n, 3]), tensor(gb, vec![n, 3]))
    }
}

/// The backward step of the fused distance term under autodiff.
#[derive(Debug)]
struct DistanceLossBackward;

impl<B: DistanceLossBackend + DistanceLossGrads> Backward<B, 2> for DistanceLossBackward {
    type State = (NodeId, NodeId, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_a, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (a_state, b_state, target) = ops.state;
        let a = checkpointer.retrieve_node_output::<FloatTensor<B>>(a_state);
        let b = checkpointer.retrieve_node_output::<FloatTensor<B>>(b_state);
        let (ga, gb) = B::distance_loss_grads(a, b, target, grad);
        if let Some(node) = node_a {
            grads.register::<B>(node.id, ga);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, gb);
        }
    }
}

impl<B, C> DistanceLossBackend for Autodiff<B, C>
where
    B: DistanceLossBackend + DistanceLossGrads,
    C: CheckpointStrategy,
{
    fn distance_loss(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        target: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match DistanceLossBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let a_state = prep.checkpoint(&a);
                let b_state = prep.checkpoint(&b);
                let target = target.into_primitive();
                let out = B::distance_loss(a.into_primitive(), b.into_primitive(), target.clone());
                prep.finish((a_state, b_state, target), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::distance_loss(
                a.into_primitive(),
                b.into_primitive(),
                target.into_primitive(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// ‖p − q‖ of two 3-vectors: the sum of squares in f64 (as `loss::target_distances`
    /// computes it), the root in f32.
    fn length(p: &[f32], q: &[f32]) -> f32 {
        let d = [0, 1, 2].map(|c| f64::from(p[c]) - f64::from(q[c]));
        ((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) as f32).sqrt()
    }

    fn relative(a: &[f32], b: &[f32]) -> f32 {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        worst / b.iter().map(|y| y.abs()).fold(0.0, f32::max).max(1e-12)
    }

    /// The fused term and both its gradients equal burn's composition on autodiff flex: a size
    /// under one block of lanes, and one over several blocks with a remainder, where some b_j
    /// coincide with an a_i (distances clamped, no gradient through them).
    #[test]
    fn the_fused_distance_term_and_its_gradients_equal_burns() {
        for n in [13, 150] {
            let av = values(3 * n, 1);
            let mut bv = values(3 * n, 2);
            for i in (0..n).step_by(7) {
                let j = (i * 5) % n;
                let a_row = [av[3 * i], av[3 * i + 1], av[3 * i + 2]];
                bv[3 * j..3 * j + 3].copy_from_slice(&a_row);
            }
            compare_with_burn(n, av, bv);
        }
    }

    fn compare_with_burn(n: usize, av: Vec<f32>, bv: Vec<f32>) {
        let device = Device::flex().autodiff();
        let pv = values(3 * n, 3);
        let tv: Vec<f32> = pv
            .chunks(3)
            .flat_map(|p| pv.chunks(3).map(move |q| length(p, q)))
            .collect();
        let run = |fused: bool| {
            let a =
                Tensor::<2>::from_data(TensorData::new(av.clone(), [n, 3]), &device).require_grad();
            let b =
                Tensor::<2>::from_data(TensorData::new(bv.clone(), [n, 3]), &device).require_grad();
            let t = Tensor::<2>::from_data(TensorData::new(tv.clone(), [n, n]), &device);
            let p = Tensor::<2>::from_data(TensorData::new(pv.clone(), [n, 3]), &device);
            let loss = if fused {
                distance_term(a.clone(), b.clone(), p)
            } else {
                (crate::loss::pairwise_distances(a.clone(), b.clone()) - t)
                    .powi_scalar(2)
                    .mean()
            };
            let loss = loss.mul_scalar(3.0); // an upstream gradient other than 1
            let grads = loss.backward();
            let read = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
            (
                loss.into_data().try_into_vec::<f32>().unwrap(),
                read(a.grad(&grads).unwrap()),
                read(b.grad(&grads).unwrap()),
            )
        };
        let (l, ga, gb) = run(true);
        let (l_ref, ga_ref, gb_ref) = run(false);
        assert!(relative(&l, &l_ref) < 1e-5, "{l:?} {l_ref:?}");
        assert!(
            relative(&ga, &ga_ref) < 1e-4,
            "a: {}",
            relative(&ga, &ga_ref)
        );
        assert!(
            relative(&gb, &gb_ref) < 1e-4,
            "b: {}",
            relative(&gb, &gb_ref)
        );
    }
}
