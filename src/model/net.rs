//! The APE network: a 4×4×4 stride-4 stem, a compact UNet at 1/4 resolution, and a batch norm
//! without affine parameters before the 3-channel output (method.md), or instead a sigmoid
//! times a learned scale (`ApeNetConfig::output_scale`, the reference code's output).
//!
//! Widths default to 16, 32, 64 over three levels with two 3×3×3 convolutions each (about 0.5 M
//! parameters): small enough to train on a 2-core CPU in hours, and a receptive field of about
//! 20 cm at 2 mm voxels, enough to see where along the body a patch lies.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig3d};
use burn::tensor::{Device, Tensor, activation};

use super::cpu_net::{ChannelNorm, CpuLayer, CpuNet, FoldedNorm};
use super::norm::{PlainBatchNorm, PlainBatchNormConfig};

#[derive(Config, Debug, PartialEq)]
pub struct ApeNetConfig {
    /// Channels at 1/4, 1/8, 1/16 … resolution; one level each.
    #[config(default = "vec![16, 32, 64]")]
    pub widths: Vec<usize>,
    /// 3×3×3 convolutions per level, in the encoder and in the decoder.
    #[config(default = 2)]
    pub convs_per_level: usize,
    /// Embedding dimension.
    #[config(default = 3)]
    pub out_channels: usize,
    /// Encoder-only levels below the UNet's deepest (1/32, 1/64 … resolution; `convs_per_level`
    /// convolutions each): whole-body context, seen through a 3-channel linear head at each.
    /// With them every level below 1/4 gets such a head too (the UNet's decoder outputs and its
    /// deepest level), each upsampled trilinearly to 1/4 and added to the output, as the
    /// reference code's pyramid does. The heads start at zero, so a network grown from one
    /// without them ([`ApeNet::grown`]) computes the same function at its first step.
    /// `None` (model files from before): no such levels, no heads.
    pub context_widths: Option<Vec<usize>>,
    /// The value that marks masked voxels in training crops (outside the window's [0, 1], such
    /// as −1). With it the stem reads a second input channel, 1 where a voxel holds this value
    /// and 0 elsewhere, so that the network can tell a masked block from tissue: the reference
    /// code's mask channel. Its learned mask token would add nothing here: the stem is linear
    /// before its norm, so the mask channel's own weights already give masked voxels any
    /// constant response. Windowed scans never hold the value, so at inference the channel is
    /// zero and only the stem's first input channel counts. `None` (model files from before):
    /// one input channel.
    pub mask_channel: Option<f32>,
    /// The output layer. `None` (model files from before): a batch norm without affine
    /// parameters (method.md), whose statistics are one scan's crops in training and a running
    /// average at inference. `Some(s)`: a sigmoid times a learned scale per channel starting at
    /// `s`, as the reference code's output: the same function in training and at inference.
    pub output_scale: Option<f32>,
    /// The norm after each convolution. `None` (model files from before): batch norms
    /// ([`BlockNorm::Batch`], method.md).
    pub block_norm: Option<BlockNorm>,
}

/// The norm of every convolution block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockNorm {
    /// Batch norm: each channel over the batch's voxels in training (one scan's crops), over
    /// running averages at inference (method.md).
    Batch,
    /// Layer norm over channels, voxel by voxel, as the reference code's blocks: the same
    /// function in training and at inference, whatever the batch. Its affine parameters are
    /// the block's batch-norm `gamma` and `beta` (its running statistics stay unused), so
    /// model files keep one layout.
    Layer,
}

struct LayerCost {
    params: usize,
    flops: u64,
}

/// Convolution, norm ([`BlockNorm`]), ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv3d,
    /// The batch norm, or with `layer_norm` the layer norm's affine parameters.
    norm: BatchNorm,
    /// [`BlockNorm::Layer`]: normalise over channels instead of over the batch.
    #[module(skip)]
    layer_norm: bool,
}

impl ConvBlock {
    fn new(
        [input, output]: [usize; 2],
        kernel: usize,
        stride: usize,
        norm: BlockNorm,
        device: &Device,
    ) -> Self {
        let padding = if stride == 1 { kernel / 2 } else { 0 };
        // A batch norm subtracts any bias; a layer norm over channels would, without one, see
        // only the direction of `W x` and lose its length (a uniform patch into the stem would
        // give the same features at every intensity).
        Self {
            conv: Conv3dConfig::new([input, output], [kernel; 3])
                .with_stride([stride; 3])
                .with_padding(PaddingConfig3d::Explicit(padding, padding, padding))
                .with_bias(norm == BlockNorm::Layer)
                .init(device),
            norm: BatchNormConfig::new(output).init(device),
            layer_norm: norm == BlockNorm::Layer,
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = convolve(&self.conv, x);
        if self.layer_norm {
            activation::relu(channel_layer_norm(
                x,
                self.norm.gamma.val(),
                self.norm.beta.val(),
                self.norm.epsilon,
            ))
        } else {
            super::ops::norm::batch_norm(&self.norm, x, true)
        }
    }
}

/// Layer norm over the channels of each voxel of `[b, c, z, y, x]`, then `gamma`, `beta` per
/// channel. burn's own ops, so that it differentiates on every backend.
fn channel_layer_norm(x: Tensor<5>, gamma: Tensor<1>, beta: Tensor<1>, epsilon: f64) -> Tensor<5> {
    let channels = gamma.dims()[0];
    let centred = x.clone() - x.mean_dim(1);
    let variance = centred.clone().powi_scalar(2).mean_dim(1);
    let normalised = centred / variance.add_scalar(epsilon).sqrt();
    normalised * gamma.reshape([1, channels, 1, 1, 1]) + beta.reshape([1, channels, 1, 1, 1])
}

#[derive(Module, Debug)]
pub struct Level {
    blocks: Vec<ConvBlock>,
}

impl Level {
    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.blocks.iter().fold(x, |x, b| b.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct ApeNet {
    /// `ApeNetConfig::mask_channel`: the stem's second input channel marks voxels of this value.
    #[module(skip)]
    mask_value: Option<f32>,
    stem: ConvBlock,
    encoders: Vec<Level>,
    /// Stride-2 2×2×2 convolutions into each deeper level.
    downs: Vec<ConvBlock>,
    /// 1×1×1 convolutions after nearest ×2 upsampling, into each shallower level.
    ups: Vec<ConvBlock>,
    decoders: Vec<Level>,
    head: Conv3d,
    /// The output batch norm (`ApeNetConfig::output_scale` is `None`).
    out_norm: Option<PlainBatchNorm>,
    /// The sigmoid output's learned scale per channel (`ApeNetConfig::output_scale` is `Some`).
    out_scale: Option<Param<Tensor<1>>>,
    /// Stride-2 downsamplings into each context level (empty without them).
    context_downs: Vec<ConvBlock>,
    context_levels: Vec<Level>,
    /// 1×1×1 heads of the levels below 1/4 (levels 1…, the context levels last).
    heads: Vec<Conv3d>,
}

impl ApeNetConfig {
    /// The context levels' widths (empty without them).
    pub fn context(&self) -> &[usize] {
        self.context_widths.as_deref().unwrap_or_default()
    }

    /// Whether every level below 1/4 has an output head (with context levels).
    pub fn has_level_heads(&self) -> bool {
        !self.context().is_empty()
    }

    /// The stem's input channels: the image, and the mask channel where there is one.
    pub fn input_channels(&self) -> usize {
        1 + usize::from(self.mask_channel.is_some())
    }

    /// The blocks' norm.
    pub fn norm(&self) -> BlockNorm {
        self.block_norm.unwrap_or(BlockNorm::Batch)
    }

    /// All levels: the UNet's, then the context ones.
    fn levels(&self) -> usize {
        self.widths.len() + self.context().len()
    }

    /// Input sizes must be multiples of this, in voxels.
    pub fn size_multiple(&self) -> usize {
        4 << self.levels().saturating_sub(1)
    }

    /// How far (in input voxels) an output cell can see: the receptive-field radius, rounded up.
    /// Tiles of sliding-window inference overlap by this much, so that they agree exactly with a
    /// single pass.
    pub fn receptive_radius(&self) -> usize {
        let mut radius = 4; // the stem cell
        for level in 0..self.widths.len() {
            let jump = 4 << level;
            let deeper = level + 1 < self.widths.len();
            // Encoder and decoder convolutions (the deepest level has no decoder).
            let convs = if deeper {
                2 * self.convs_per_level
            } else {
                self.convs_per_level
            };
            radius += convs * jump;
            if deeper {
                radius += 2 * jump; // the downsampling into, and the upsampling out of, level+1
            }
        }
        // A context level reaches one cell of the level above through its downsampling and
        // `convs_per_level` cells of its own; its head's trilinear upsampling, one cell of
        // each level on the way back to 1/4 (under two of its own cells in all).
        for c in 0..self.context().len() {
            let level = self.widths.len() + c;
            let jump = 4 << level;
            radius += jump / 2 + self.convs_per_level * jump + 2 * jump;
        }
        if self.has_level_heads() {
            // The UNet levels' heads upsample too: under two cells of the deepest UNet level.
            radius += 2 * (4 << (self.widths.len() - 1));
        }
        radius
    }

    /// Parameters of the network, counted from the config.
    pub fn parameter_count(&self) -> usize {
        self.layers([16, 16, 16]).iter().map(|l| l.params).sum()
    }

    /// Multiply–adds ×2 (FLOPs) of one forward pass on an input of `size` voxels (x, y, z).
    pub fn flops(&self, size: [usize; 3]) -> u64 {
        self.layers(size).iter().map(|l| l.flops).sum()
    }

    /// Every convolution (and its batch norm) with its parameter count and FLOPs.
    fn layers(&self, size: [usize; 3]) -> Vec<LayerCost> {
        let w = &self.widths;
        let n = self.convs_per_level;
        let mut out = Vec::new();
        let cells = |level: usize| -> u64 {
            size.iter()
                .map(|&s| (s / (4 << level)).max(1) as u64)
                .product()
        };
        let conv = |cin: usize, cout: usize, k: usize, cells: u64, norm: bool| LayerCost {
            params: cin * cout * k * k * k + if norm { 2 * cout } else { cout },
            flops: 2 * (cin * cout * k * k * k) as u64 * cells,
        };
        out.push(conv(self.input_channels(), w[0], 4, cells(0), true));
        for (level, &width) in w.iter().enumerate() {
            if level > 0 {
                out.push(conv(w[level - 1], width, 2, cells(level), true));
            }
            for _ in 0..n {
                out.push(conv(width, width, 3, cells(level), true));
            }
        }
        for level in (0..w.len() - 1).rev() {
            out.push(conv(w[level + 1], w[level], 1, cells(level), true));
            out.push(conv(2 * w[level], w[level], 3, cells(level), true));
            for _ in 1..n {
                out.push(conv(w[level], w[level], 3, cells(level), true));
            }
        }
        out.push(conv(w[0], self.out_channels, 1, cells(0), false));
        let mut above = w[w.len() - 1];
        for (c, &width) in self.context().iter().enumerate() {
            let level = w.len() + c;
            out.push(conv(above, width, 2, cells(level), true));
            for _ in 0..n {
                out.push(conv(width, width, 3, cells(level), true));
            }
            above = width;
        }
        for (level, width) in self.head_widths() {
            // No bias; the upsampling's few FLOPs are left out.
            let mut head = conv(width, self.out_channels, 1, cells(level), false);
            head.params -= self.out_channels;
            out.push(head);
        }
        out
    }

    /// (level, input channels) of each level head: the UNet's levels 1…, then the context
    /// levels; none without context levels.
    fn head_widths(&self) -> Vec<(usize, usize)> {
        if !self.has_level_heads() {
            return Vec::new();
        }
        self.widths
            .iter()
            .chain(self.context())
            .copied()
            .enumerate()
            .skip(1)
            .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.widths.is_empty() || self.widths.contains(&0) || self.context().contains(&0) {
            return Err(format!(
                "widths {:?} (context {:?}) must be non-empty and positive",
                self.widths,
                self.context()
            ));
        }
        if self.levels() > 6
            || self.widths.len() > 5
            || self.convs_per_level == 0
            || self.convs_per_level > 8
        {
            return Err(format!(
                "{} levels ({} with context) of {} convolutions is out of range",
                self.widths.len(),
                self.levels(),
                self.convs_per_level
            ));
        }
        if self.out_channels == 0 {
            return Err("out_channels must be positive".to_owned());
        }
        if let Some(scale) = self.output_scale
            && !(scale.is_finite() && scale > 0.0)
        {
            return Err(format!(
                "the output's starting scale {scale} must be finite and positive"
            ));
        }
        if let Some(value) = self.mask_channel {
            // Inside the window's range it would mark tissue as masked, at inference too.
            if !value.is_finite() || (0.0..=1.0).contains(&value) {
                return Err(format!(
                    "the mask channel's value {value} must be finite and outside the window's [0, 1]"
                ));
            }
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> ApeNet {
        let w = &self.widths;
        let n = self.convs_per_level;
        let norm = self.norm();
        let block = |input: usize, output: usize, kernel: usize, stride: usize| {
            ConvBlock::new([input, output], kernel, stride, norm, device)
        };
        let level = |width: usize, first_input: usize| Level {
            blocks: (0..n)
                .map(|i| block(if i == 0 { first_input } else { width }, width, 3, 1))
                .collect(),
        };
        ApeNet {
            mask_value: self.mask_channel,
            stem: block(self.input_channels(), w[0], 4, 4),
            encoders: w.iter().map(|&width| level(width, width)).collect(),
            downs: w.windows(2).map(|p| block(p[0], p[1], 2, 2)).collect(),
            ups: w.windows(2).map(|p| block(p[1], p[0], 1, 1)).collect(),
            decoders: w[..w.len() - 1]
                .iter()
                .map(|&width| level(width, 2 * width))
                .collect(),
            head: Conv3dConfig::new([w[0], self.out_channels], [1, 1, 1]).init(device),
            out_norm: self
                .output_scale
                .is_none()
                .then(|| PlainBatchNormConfig::new(self.out_channels).init(device)),
            out_scale: self
                .output_scale
                .map(|s| Param::from_tensor(Tensor::full([self.out_channels], s, device))),
            context_downs: std::iter::once(w[w.len() - 1])
                .chain(self.context().iter().copied())
                .collect::<Vec<_>>()
                .windows(2)
                .map(|p| block(p[0], p[1], 2, 2))
                .collect(),
            context_levels: self
                .context()
                .iter()
                .map(|&width| level(width, width))
                .collect(),
            heads: self
                .head_widths()
                .into_iter()
                .map(|(_, width)| {
                    Conv3dConfig::new([width, self.out_channels], [1, 1, 1])
                        .with_bias(false)
                        .with_initializer(Initializer::Zeros)
                        .init(device)
                })
                .collect(),
        }
    }

    /// Whether a network of `self` grows into a different one of `bigger` by
    /// [`ApeNet::grown`]: the same UNet; context levels where `self` has none, or the same ones;
    /// a mask channel where `self` has none, or the same one.
    pub fn grows_into(&self, bigger: &Self) -> bool {
        let context = self.context() == bigger.context()
            || (self.context().is_empty() && bigger.has_level_heads());
        let mask = self.mask_channel == bigger.mask_channel || self.mask_channel.is_none();
        context
            && mask
            && self.output_scale.is_some() == bigger.output_scale.is_some()
            && self.norm() == bigger.norm()
            && self != bigger
            && self.widths == bigger.widths
            && self.convs_per_level == bigger.convs_per_level
            && self.out_channels == bigger.out_channels
    }
}

impl ApeNet {
    /// - input: `[batch, 1, z, y, x]`, intensities in [0, 1]; sizes multiples of
    ///   [`ApeNetConfig::size_multiple`]
    /// - output: `[batch, out_channels, z/4, y/4, x/4]`, the APE map at 1/4 resolution
    pub fn forward(&self, input: Tensor<5>) -> Tensor<5> {
        let input = match self.mask_value {
            Some(value) => {
                // A constant of the batch: no gradient flows into it.
                let mask = input.clone().equal_elem(value).float();
                Tensor::cat(vec![input, mask], 1)
            }
            None => input,
        };
        let mut x = self.stem.forward(input); // [b, w0, z/4, y/4, x/4]
        let mut skips = Vec::with_capacity(self.encoders.len());
        for (depth, encoder) in self.encoders.iter().enumerate() {
            if depth > 0 {
                x = self.downs[depth - 1].forward(x); // [b, w_depth, …/2]
            }
            x = encoder.forward(x);
            skips.push(x.clone());
        }
        skips.pop();
        // The levels' head outputs, each with its level, summed in at the end.
        let mut level_outputs = Vec::new();
        let deepest = self.encoders.len() - 1;
        if !self.heads.is_empty() {
            let mut context = x.clone();
            for (c, (down, level)) in self
                .context_downs
                .iter()
                .zip(&self.context_levels)
                .enumerate()
            {
                context = level.forward(down.forward(context));
                let head = &self.heads[deepest + c];
                level_outputs.push((deepest + 1 + c, convolve(head, context.clone())));
            }
            if deepest > 0 {
                level_outputs.push((deepest, convolve(&self.heads[deepest - 1], x.clone())));
            }
        }
        for (depth, decoder) in self.decoders.iter().enumerate().rev() {
            // Convolution 1×1×1, batch norm and ReLU commute with nearest upsampling (each value
            // repeated 8 times leaves the batch statistics as they are): run them at the lower
            // resolution, on an eighth of the voxels, as cpu_net does.
            let up = upsample_nearest2(self.ups[depth].forward(x)); // [b, w_depth, …×2]
            let skip = skips.pop().unwrap_or_else(|| up.clone());
            x = decoder.forward(Tensor::cat(vec![up, skip], 1));
            if depth > 0 && !self.heads.is_empty() {
                level_outputs.push((depth, convolve(&self.heads[depth - 1], x.clone())));
            }
        }
        let mut out = convolve(&self.head, x);
        for (level, head) in level_outputs {
            out = out + (0..level).fold(head, |h, _| upsample_linear2(h));
        }
        self.output(out)
    }

    /// The output layer on the summed heads: the batch norm, or the scaled sigmoid.
    fn output(&self, out: Tensor<5>) -> Tensor<5> {
        match (&self.out_norm, &self.out_scale) {
            (_, Some(scale)) => {
                let channels = scale.dims()[0];
                activation::sigmoid(out) * scale.val().reshape([1, channels, 1, 1, 1])
            }
            (Some(norm), None) => norm.forward(out),
            (None, None) => out,
        }
    }

    /// This network grown into `config` (see [`ApeNetConfig::grows_into`]): its own modules
    /// kept; context levels added freshly initialised with every level head zero; a mask
    /// channel added with zero weights in the stem. It computes the same function until
    /// training moves the new weights. `own` is this network's config.
    pub fn grown(
        self,
        own: &ApeNetConfig,
        config: &ApeNetConfig,
        device: &Device,
    ) -> Result<Self, String> {
        if !own.grows_into(config) {
            return Err(format!(
                "a network of widths {:?} ({} convolutions per level, context {:?}, mask channel {:?}) does not grow into widths {:?} with context {:?} and mask channel {:?}",
                own.widths,
                own.convs_per_level,
                own.context(),
                own.mask_channel,
                config.widths,
                config.context(),
                config.mask_channel
            ));
        }
        let fresh = config.init(device);
        let mut stem = self.stem;
        if own.mask_channel.is_none() && config.mask_channel.is_some() {
            let weight = stem.conv.weight.val();
            let zeros = weight.zeros_like();
            // A new leaf: the concatenation itself is not one under autodiff.
            stem.conv.weight = Param::from_tensor(Tensor::cat(vec![weight, zeros], 1).detach());
        }
        let grown = Self {
            mask_value: config.mask_channel,
            stem,
            encoders: self.encoders,
            downs: self.downs,
            ups: self.ups,
            decoders: self.decoders,
            head: self.head,
            out_norm: self.out_norm,
            out_scale: self.out_scale,
            ..fresh
        };
        if own.context() == config.context() {
            Ok(Self {
                context_downs: self.context_downs,
                context_levels: self.context_levels,
                heads: self.heads,
                ..grown
            })
        } else {
            Ok(grown)
        }
    }
}

#[cfg(test)]
impl ApeNet {
    /// The same network with random level heads (they start at zero), so that tests see them
    /// at work.
    pub(crate) fn with_random_heads(mut self, device: &Device) -> Self {
        for head in &mut self.heads {
            let [cout, cin, ..] = head.weight.dims();
            *head = Conv3dConfig::new([cin, cout], [1, 1, 1])
                .with_bias(false)
                .init(device);
        }
        self
    }

    /// The same network with random weights on the stem's mask channel (grown ones are zero),
    /// so that tests see it at work.
    pub(crate) fn with_random_mask_weights(mut self, device: &Device) -> Self {
        let weight = self.stem.conv.weight.val();
        let [cout, cin, k, ..] = weight.dims();
        assert_eq!(cin, 2, "a stem with a mask channel");
        let random: Conv3d = Conv3dConfig::new([1, cout], [k; 3])
            .with_bias(false)
            .init(device);
        let image = weight.narrow(1, 0, 1);
        self.stem.conv.weight =
            Param::from_tensor(Tensor::cat(vec![image, random.weight.val()], 1));
        self
    }
}

/// Trilinear ×2 upsampling of the three spatial dimensions with cell centres kept (PyTorch's
/// `align_corners=False`, edges clamped): each output cell is ¾ of its own input cell and ¼ of
/// the neighbour on its side. Slices and sums only, so it differentiates on every backend.
fn upsample_linear2(x: Tensor<5>) -> Tensor<5> {
    (2..5).fold(x, upsample_linear2_along)
}

fn upsample_linear2_along(x: Tensor<5>, dim: usize) -> Tensor<5> {
    let n = x.dims()[dim];
    let (prev, next) = if n > 1 {
        (
            Tensor::cat(
                vec![x.clone().narrow(dim, 0, 1), x.clone().narrow(dim, 0, n - 1)],
                dim,
            ),
            Tensor::cat(
                vec![
                    x.clone().narrow(dim, 1, n - 1),
                    x.clone().narrow(dim, n - 1, 1),
                ],
                dim,
            ),
        )
    } else {
        (x.clone(), x.clone())
    };
    let even = x.clone().mul_scalar(0.75) + prev.mul_scalar(0.25);
    let odd = x.mul_scalar(0.75) + next.mul_scalar(0.25);
    let mut dims = even.dims();
    dims[dim] *= 2;
    let pairs: Tensor<6> = Tensor::stack(vec![even, odd], dim + 1);
    pairs.reshape(dims)
}

/// A convolution of the network through [`super::ops::conv3d`] (ape's kernels on the CPU
/// backend, burn's elsewhere), its bias added after; burn's `Conv3d::forward` for a geometry
/// that op does not take (non-cubic, dilated or grouped).
fn convolve(conv: &Conv3d, x: Tensor<5>) -> Tensor<5> {
    let [k, ky, kx] = conv.kernel_size;
    let [s, sy, sx] = conv.stride;
    let padding = match conv.padding {
        PaddingConfig3d::Valid => Some(0),
        PaddingConfig3d::Explicit(a, b, c) if a == b && a == c => Some(a),
        _ => None,
    };
    let cubic = k == ky && k == kx && s == sy && s == sx;
    let (Some(padding), true, true, 1) = (padding, cubic, conv.dilation == [1; 3], conv.groups)
    else {
        return conv.forward(x);
    };
    let out = super::ops::conv3d(x, conv.weight.val(), s, padding);
    match &conv.bias {
        Some(bias) => {
            let c = bias.dims()[0];
            out + bias.val().reshape([1, c, 1, 1, 1])
        }
        None => out,
    }
}

/// Nearest-neighbour ×2 upsampling of the three spatial dimensions (a backend op with its own
/// backward, burn's broadcasts and reshapes where ape's ops are off or on wgpu).
fn upsample_nearest2(x: Tensor<5>) -> Tensor<5> {
    super::ops::upsample::upsample_nearest2(x)
}

/// A named tensor of the network, for export to other frameworks.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    /// PyTorch-style dotted name, e.g. `encoders.1.blocks.0.conv.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl ApeNet {
    /// Every parameter and running statistic, named as a PyTorch module of the same structure
    /// would name it (`benches/torch_reference.py` builds one).
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        fn push<const D: usize>(out: &mut Vec<NamedTensor>, name: String, t: Tensor<D>) {
            let shape = t.dims().to_vec();
            let values = t.into_data().try_into_vec::<f32>().unwrap_or_default();
            out.push(NamedTensor {
                name,
                shape,
                values,
            });
        }
        fn block(out: &mut Vec<NamedTensor>, prefix: &str, b: &ConvBlock) {
            push(out, format!("{prefix}.conv.weight"), b.conv.weight.val());
            if let Some(bias) = &b.conv.bias {
                push(out, format!("{prefix}.conv.bias"), bias.val());
            }
            push(out, format!("{prefix}.norm.weight"), b.norm.gamma.val());
            push(out, format!("{prefix}.norm.bias"), b.norm.beta.val());
            push(
                out,
                format!("{prefix}.norm.running_mean"),
                b.norm.running_mean.value(),
            );
            push(
                out,
                format!("{prefix}.norm.running_var"),
                b.norm.running_var.value(),
            );
        }
        block(&mut out, "stem", &self.stem);
        for (name, levels) in [("encoders", &self.encoders), ("decoders", &self.decoders)] {
            for (l, level) in levels.iter().enumerate() {
                for (i, b) in level.blocks.iter().enumerate() {
                    block(&mut out, &format!("{name}.{l}.blocks.{i}"), b);
                }
            }
        }
        for (l, level) in self.context_levels.iter().enumerate() {
            for (i, b) in level.blocks.iter().enumerate() {
                block(&mut out, &format!("context_levels.{l}.blocks.{i}"), b);
            }
        }
        for (name, blocks) in [
            ("downs", &self.downs),
            ("ups", &self.ups),
            ("context_downs", &self.context_downs),
        ] {
            for (l, b) in blocks.iter().enumerate() {
                block(&mut out, &format!("{name}.{l}"), b);
            }
        }
        for (l, head) in self.heads.iter().enumerate() {
            push(&mut out, format!("heads.{l}.weight"), head.weight.val());
        }
        push(&mut out, "head.weight".to_owned(), self.head.weight.val());
        if let Some(bias) = &self.head.bias {
            push(&mut out, "head.bias".to_owned(), bias.val());
        }
        if let Some(norm) = &self.out_norm {
            push(
                &mut out,
                "out_norm.running_mean".to_owned(),
                norm.running_mean.value(),
            );
            push(
                &mut out,
                "out_norm.running_var".to_owned(),
                norm.running_var.value(),
            );
        }
        if let Some(scale) = &self.out_scale {
            push(&mut out, "out_scale".to_owned(), scale.val());
        }
        out
    }
}

impl ApeNet {
    /// The same network with every batch norm's momentum set to `momentum`: each training-mode
    /// forward pass then sets running statistics to `(1 − m)·running + m·batch`.
    pub fn with_norm_momentum(mut self, momentum: f64) -> Self {
        for block in self.blocks_mut() {
            block.norm.momentum = momentum;
        }
        if let Some(norm) = &mut self.out_norm {
            norm.momentum = momentum;
        }
        self
    }

    /// Every convolution block: the stem, the levels' blocks, the down and up blocks.
    fn blocks_mut(&mut self) -> impl Iterator<Item = &mut ConvBlock> {
        std::iter::once(&mut self.stem)
            .chain(self.encoders.iter_mut().flat_map(|l| l.blocks.iter_mut()))
            .chain(self.decoders.iter_mut().flat_map(|l| l.blocks.iter_mut()))
            .chain(self.downs.iter_mut())
            .chain(self.ups.iter_mut())
            .chain(
                self.context_levels
                    .iter_mut()
                    .flat_map(|l| l.blocks.iter_mut()),
            )
            .chain(self.context_downs.iter_mut())
    }

    /// The same network with its output norm fixed to its running statistics in training too
    /// (`fixed`), or back to batch statistics in training.
    pub fn with_fixed_output_norm(mut self, fixed: bool) -> Self {
        if let Some(norm) = &mut self.out_norm {
            norm.fixed = fixed;
        }
        self
    }

    /// The same network for inference on the CPU without burn (`cpu_net`): batch norms folded
    /// into the convolutions with their running statistics. A mask channel is left out: it is
    /// zero on every windowed scan, so the stem reads the image alone.
    pub fn cpu_inference(&self) -> Result<CpuNet, String> {
        fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
            t.into_data()
                .try_into_vec::<f32>()
                .map_err(|e| format!("{e:?}"))
        }
        fn block(b: &ConvBlock) -> Result<CpuLayer, String> {
            block_reading(b, b.conv.weight.dims()[1])
        }
        /// A block whose convolution reads only its first `inputs` input channels.
        fn block_reading(b: &ConvBlock, inputs: usize) -> Result<CpuLayer, String> {
            let weight = b.conv.weight.val().narrow(1, 0, inputs);
            let [cout, cin, kernel, _, _] = weight.dims();
            let gamma = values(b.norm.gamma.val())?;
            let beta = values(b.norm.beta.val())?;
            if b.layer_norm {
                let norm = ChannelNorm {
                    gamma,
                    beta,
                    epsilon: b.norm.epsilon as f32,
                };
                let bias = match &b.conv.bias {
                    Some(bias) => values(bias.val())?,
                    None => vec![0.0; cout],
                };
                return CpuLayer::conv_layer_norm(
                    &values(weight)?,
                    [cout, cin, kernel],
                    &bias,
                    norm,
                );
            }
            let norm = FoldedNorm::new(
                &values(b.norm.running_mean.value())?,
                &values(b.norm.running_var.value())?,
                b.norm.epsilon,
                Some((&gamma, &beta)),
                None,
            );
            CpuLayer::conv_norm(&values(weight)?, [cout, cin, kernel], &norm, true)
        }
        let level = |l: &Level| l.blocks.iter().map(block).collect::<Result<Vec<_>, _>>();
        let head_weight = self.head.weight.val();
        let [cout, cin, kernel, _, _] = head_weight.dims();
        let bias = self
            .head
            .bias
            .as_ref()
            .map(|b| values(b.val()))
            .transpose()?;
        // The batch norm folds into the head; the sigmoid output keeps the head as it is (its
        // bias only) and is applied after the level heads are summed in.
        let out_norm = match &self.out_norm {
            Some(norm) => FoldedNorm::new(
                &values(norm.running_mean.value())?,
                &values(norm.running_var.value())?,
                norm.epsilon,
                None,
                bias.as_deref(),
            ),
            None => FoldedNorm::new(
                &vec![0.0; cout],
                &vec![1.0; cout],
                0.0,
                None,
                bias.as_deref(),
            ),
        };
        let output_scale = self
            .out_scale
            .as_ref()
            .map(|scale| values(scale.val()))
            .transpose()?;
        Ok(CpuNet {
            stem: block_reading(&self.stem, 1)?,
            encoders: self.encoders.iter().map(level).collect::<Result<_, _>>()?,
            downs: self.downs.iter().map(block).collect::<Result<_, _>>()?,
            ups: self.ups.iter().map(block).collect::<Result<_, _>>()?,
            decoders: self.decoders.iter().map(level).collect::<Result<_, _>>()?,
            head: CpuLayer::conv_norm(
                &values(head_weight)?,
                [cout, cin, kernel],
                &out_norm,
                false,
            )?,
            context_downs: self
                .context_downs
                .iter()
                .map(block)
                .collect::<Result<_, _>>()?,
            context_levels: self
                .context_levels
                .iter()
                .map(level)
                .collect::<Result<_, _>>()?,
            heads: self
                .heads
                .iter()
                .map(|head| {
                    let weight = head.weight.val();
                    let [cout, cin, kernel, _, _] = weight.dims();
                    // Summed in before the output norm: scaled by it, shifted once (by the
                    // main head).
                    let scaled = FoldedNorm {
                        scale: out_norm.scale.clone(),
                        shift: vec![0.0; cout],
                    };
                    CpuLayer::conv_norm(&values(weight)?, [cout, cin, kernel], &scaled, false)
                })
                .collect::<Result<_, _>>()?,
            output_scale,
            wide_kernel: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    use crate::model::test_values::{image, input as network_input, read, relative};

    /// Values in [0, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::model::test_values::values(n, seed)
            .into_iter()
            .map(|v| v + 0.5)
            .collect()
    }

    /// The output and every parameter's gradient of `Σ r · net(x)`, block by block.
    fn gradients(net: &ApeNet, x: &Tensor<5>, r: &Tensor<5>) -> Vec<(String, Vec<f32>)> {
        let out = net.forward(x.clone());
        let grads = (out.clone() * r.clone()).sum().backward();
        let read = |t: Option<Tensor<5>>| t.map(|t| t.into_data().try_into_vec::<f32>().unwrap());
        let read1 = |t: Option<Tensor<1>>| t.map(|t| t.into_data().try_into_vec::<f32>().unwrap());
        let mut all = vec![("output".to_owned(), read(Some(out)).unwrap())];
        let blocks = std::iter::once(&net.stem)
            .chain(net.encoders.iter().flat_map(|l| l.blocks.iter()))
            .chain(net.downs.iter())
            .chain(net.ups.iter())
            .chain(net.decoders.iter().flat_map(|l| l.blocks.iter()))
            .chain(net.context_downs.iter())
            .chain(net.context_levels.iter().flat_map(|l| l.blocks.iter()));
        for (i, b) in blocks.enumerate() {
            let w = read(b.conv.weight.val().grad(&grads));
            let g = read1(b.norm.gamma.val().grad(&grads));
            let beta = read1(b.norm.beta.val().grad(&grads));
            for (name, v) in [("weight", w), ("gamma", g), ("beta", beta)] {
                all.push((format!("block {i} {name}"), v.expect("a gradient")));
            }
        }
        let head = read(net.head.weight.val().grad(&grads));
        all.push(("head weight".to_owned(), head.expect("a gradient")));
        for (l, head) in net.heads.iter().enumerate() {
            let g = read(head.weight.val().grad(&grads));
            all.push((format!("level head {l} weight"), g.expect("a gradient")));
        }
        all
    }

    /// The bundled network grown by a context level: the same output before its heads move;
    /// with heads at work, `cpu_net` computes what burn computes; the upsampling is the
    /// trilinear one.
    #[test]
    fn a_grown_network_keeps_its_function_and_cpu_net_follows_its_heads() {
        let device = crate::model::backend::cpu().device;
        let model = crate::model::ApeModel::bundled(&device).unwrap();
        let own = model.meta.net.clone();
        let bigger = own.clone().with_context_widths(Some(vec![64]));
        assert!(own.grows_into(&bigger) && !bigger.grows_into(&bigger));
        assert!(!own.grows_into(&own.clone().with_widths(vec![16, 32])));
        assert_eq!(bigger.size_multiple(), 32);
        assert!(bigger.receptive_radius() > own.receptive_radius());
        assert!(bigger.parameter_count() > own.parameter_count());
        assert!(model.net.clone().grown(&bigger, &bigger, &device).is_err());
        let grown = model.net.clone().grown(&own, &bigger, &device).unwrap();

        let dims = [64usize, 64, 96];
        let input = image(dims);
        let tensor = || network_input(&input, dims, &device);
        let before = read(model.net.forward(tensor()));
        let after = read(grown.forward(tensor()));
        assert!(
            relative(&before, &after) < 1e-6,
            "growth changed the output"
        );

        let live = grown.with_random_heads(&device);
        let reference = read(live.forward(tensor()));
        assert!(
            relative(&before, &reference) > 1e-2,
            "the heads change nothing"
        );
        let ours = live.cpu_inference().unwrap().forward(&input, dims);
        assert!(
            relative(&reference, &ours) < 1e-4,
            "{}",
            relative(&reference, &ours)
        );

        // Trilinear: a ramp stays a ramp inside, edges clamped.
        let ramp = Tensor::<5>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 2.0], [1, 1, 1, 1, 3]),
            &device,
        );
        let up = read(upsample_linear2_along(ramp, 4));
        assert_eq!(up, [0.0, 0.25, 0.75, 1.25, 1.75, 2.0]);
    }

    /// A mask channel grown into the bundled network: the same function on any input while its
    /// weights are zero; once they move, a masked block changes the output and nothing else
    /// does, and `cpu_net` (which reads the image alone) still computes what burn computes on
    /// windowed scans. Values inside the window's range are refused as mask values.
    #[test]
    fn a_mask_channel_grows_in_unseen_and_sees_only_masked_voxels() {
        let device = crate::model::backend::cpu().device;
        let model = crate::model::ApeModel::bundled(&device).unwrap();
        let own = model.meta.net.clone();
        let masked = own.clone().with_mask_channel(Some(-1.0));
        assert!(masked.validate().is_ok());
        for inside in [0.0, 0.5, 1.0, f32::NAN] {
            let err = own.clone().with_mask_channel(Some(inside)).validate();
            assert!(err.is_err(), "{inside} accepted");
        }
        assert!(own.grows_into(&masked) && !masked.grows_into(&own));
        assert_eq!(masked.input_channels(), 2);
        assert_eq!(
            masked.parameter_count(),
            own.parameter_count() + 64 * own.widths[0]
        );
        let both = masked.clone().with_context_widths(Some(vec![64]));
        assert!(own.grows_into(&both) && masked.grows_into(&both));
        let grown = model.net.clone().grown(&own, &masked, &device).unwrap();

        let dims = [32usize, 48, 64];
        let image = image(dims);
        // One 8×8×8 block of voxels masked, away from the edges.
        let mut with_block = image.clone();
        for z in 8..16 {
            for y in 16..24 {
                for x in 24..32 {
                    with_block[(z * dims[1] + y) * dims[2] + x] = -1.0;
                }
            }
        }
        let tensor = |v: &[f32]| network_input(v, dims, &device);
        for input in [&image, &with_block] {
            let before = read(model.net.forward(tensor(input)));
            let after = read(grown.forward(tensor(input)));
            assert!(
                relative(&before, &after) < 1e-6,
                "growth changed the output"
            );
        }

        let live = grown.with_random_mask_weights(&device);
        let plain = read(model.net.forward(tensor(&image)));
        let live_plain = read(live.forward(tensor(&image)));
        assert!(
            relative(&plain, &live_plain) < 1e-6,
            "the mask channel sees tissue"
        );
        let blind = read(model.net.forward(tensor(&with_block)));
        let seeing = read(live.forward(tensor(&with_block)));
        assert!(
            relative(&blind, &seeing) > 1e-3,
            "the mask channel sees nothing"
        );
        let ours = live.cpu_inference().unwrap().forward(&image, dims);
        assert!(
            relative(&live_plain, &ours) < 1e-4,
            "{}",
            relative(&live_plain, &ours)
        );
    }

    /// In training a masked voxel reaches the mask channel's weights: they get gradients, and
    /// the rest of the network gets those it had before the channel was added.
    #[test]
    fn the_mask_channels_weights_learn_from_masked_voxels() {
        let device = Device::flex().autodiff();
        // Seeded draws, not interleaved with another test's.
        let _init = crate::model::weights::init_lock();
        device.seed(6);
        let own = ApeNetConfig::new()
            .with_widths(vec![8, 16])
            .with_convs_per_level(1);
        let masked = own.clone().with_mask_channel(Some(-1.0));
        let net = own.init(&device);
        let grown = net.clone().grown(&own, &masked, &device).unwrap();
        let dims = [2, 1, 32, 32, 32];
        let mut v = values(2 * 32 * 32 * 32, 1);
        v[..4096].iter_mut().for_each(|x| *x = -1.0);
        let x = Tensor::<5>::from_data(TensorData::new(v, dims), &device);
        let r = Tensor::<5>::from_data(
            TensorData::new(values(2 * 3 * 8 * 8 * 8, 2), [2, 3, 8, 8, 8]),
            &device,
        );
        let old = gradients(&net, &x, &r);
        let new = gradients(&grown, &x, &r);
        for ((name, a), (_, b)) in old.iter().zip(&new) {
            if name == "block 0 weight" {
                // [cout, 2, k, k, k]: the image's half is the old gradient, the mask's is new.
                let taps = a.len() / 8;
                let image: Vec<f32> = b.chunks_exact(taps).step_by(2).flatten().copied().collect();
                let mask: Vec<f32> = b
                    .chunks_exact(taps)
                    .skip(1)
                    .step_by(2)
                    .flatten()
                    .copied()
                    .collect();
                assert!(relative(a, &image) < 1e-5, "{}", relative(a, &image));
                assert!(
                    mask.iter().any(|g| g.abs() > 1e-6),
                    "the mask channel learns nothing"
                );
            } else {
                assert!(relative(a, b) < 1e-5, "{name}: {}", relative(a, b));
            }
        }
    }

    /// Growing leaves training where it was: at the first step the old parameters get the
    /// gradients they had, and the heads get some (they learn from there).
    #[test]
    fn a_grown_network_trains_from_the_same_gradients() {
        let device = Device::flex().autodiff();
        // Seeded draws, not interleaved with another test's.
        let _init = crate::model::weights::init_lock();
        device.seed(5);
        let own = ApeNetConfig::new()
            .with_widths(vec![8, 16])
            .with_convs_per_level(1);
        let bigger = own.clone().with_context_widths(Some(vec![16, 16]));
        let net = own.init(&device);
        let grown = net.clone().grown(&own, &bigger, &device).unwrap();
        let dims = [2, 1, 64, 64, 64];
        let x = Tensor::<5>::from_data(TensorData::new(values(2 * 64 * 64 * 64, 1), dims), &device);
        let r = Tensor::<5>::from_data(
            TensorData::new(values(2 * 3 * 16 * 16 * 16, 2), [2, 3, 16, 16, 16]),
            &device,
        );
        let old = gradients(&net, &x, &r);
        let new = gradients(&grown, &x, &r);
        for (name, a) in &old {
            let (_, b) = new.iter().find(|(n, _)| n == name).unwrap();
            assert!(relative(a, b) < 1e-5, "{name}: {}", relative(a, b));
        }
        let heads = &new[old.len() + bigger.context().len() * 3 * 2..];
        assert_eq!(heads.len(), 3, "a head on levels 1, 2 and 3");
        for (name, g) in heads {
            assert!(g.iter().any(|v| v.abs() > 1e-6), "{name} gets no gradient");
        }
    }

    /// The fused batch norm + ReLU (`ops::norm`) gives the network burn's output and
    /// gradients, every parameter within 1e-4 (relative to its largest). Seeded: on some
    /// initialisations (2 of 30 tried) one ReLU input lies within ~5e-6 of zero, where burn's
    /// f32 batch mean and ape's f64 one put it on different sides; that one voxel's subgradient
    /// then moves every gradient upstream by ~1 % (both are gradients of the same function).
    #[test]
    fn the_fused_norm_gives_the_networks_gradients_as_burns() {
        let device = Device::flex().autodiff();
        // Seeded draws, not interleaved with another test's.
        let _init = crate::model::weights::init_lock();
        device.seed(3);
        let net = ApeNetConfig::new().init(&device).materialize();
        let dims = [2, 1, 32, 32, 32];
        let x = Tensor::<5>::from_data(TensorData::new(values(65536, 1), dims), &device);
        let r = Tensor::<5>::from_data(
            TensorData::new(values(2 * 3 * 512, 2), [2, 3, 8, 8, 8]),
            &device,
        );
        let ours = gradients(&net, &x, &r);
        super::super::ops::norm::set_enabled(false);
        let theirs = gradients(&net, &x, &r);
        super::super::ops::norm::set_enabled(true);
        for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
            let apart = relative(a, b);
            assert!(apart < 1e-4, "{name}: {apart} of its largest");
        }
    }

    /// The reference code's output: a scaled sigmoid, within (0, scale) in training and at
    /// inference alike (no batch statistics); `cpu_net` computes it, level heads included; its
    /// scale learns; a model file keeps it; a batch-norm network does not grow into it.
    #[test]
    fn a_sigmoid_output_stays_within_its_learned_scale_and_cpu_net_follows() {
        let device = crate::model::backend::cpu().device;
        let config = ApeNetConfig::new()
            .with_context_widths(Some(vec![32]))
            .with_output_scale(Some(4.0));
        assert!(config.validate().is_ok());
        assert!(
            config
                .clone()
                .with_output_scale(Some(0.0))
                .validate()
                .is_err()
        );
        assert!(!ApeNetConfig::new().grows_into(&config));
        let mut net = {
            // Seeded draws, not interleaved with another test's; released before loading below.
            let _init = crate::model::weights::init_lock();
            device.seed(5);
            config.init(&device).with_random_heads(&device)
        };
        assert!(net.out_norm.is_none());
        let scales = [2.0f32, 3.0, 5.0];
        net.out_scale = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(scales.to_vec(), [3]),
            &device,
        )));
        let names: Vec<String> = net.named_tensors().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&"out_scale".to_owned()));
        assert!(!names.iter().any(|n| n.starts_with("out_norm")));

        let dims = [64usize, 64, 64];
        let input = image(dims);
        let inference = read(net.forward(network_input(&input, dims, &device)));
        let cells = inference.len() / 3;
        for (c, channel) in inference.chunks_exact(cells).enumerate() {
            assert!(channel.iter().all(|&v| v > 0.0 && v < scales[c]));
            let spread = channel.iter().fold(0.0f32, |m, &v| m.max(v))
                - channel.iter().fold(f32::MAX, |m, &v| m.min(v));
            assert!(spread > 1e-3, "channel {c} is constant");
        }
        let ours = net.cpu_inference().unwrap().forward(&input, dims);
        let apart = relative(&inference, &ours);
        assert!(apart < 1e-4, "cpu_net: {apart}");

        let autodiff = device.clone().autodiff();
        let training = net.clone().to_device(&autodiff).train();
        let out = training.forward(network_input(&input, dims, &autodiff));
        // The hidden blocks use batch statistics here; the output layer none.
        for (c, channel) in read(out.clone()).chunks_exact(cells).enumerate() {
            assert!(channel.iter().all(|&v| v > 0.0 && v < scales[c]));
        }
        let grads = out.sum().backward();
        let scale_grad = training
            .out_scale
            .as_ref()
            .and_then(|s| s.val().grad(&grads))
            .map(|g| g.into_data().try_into_vec::<f32>().unwrap());
        assert!(scale_grad.is_some_and(|g| g.iter().all(|&v| v > 0.0)));

        let meta = crate::model::ModelMeta {
            net: config,
            ..crate::model::ModelMeta::fresh("sigmoid output".to_owned())
        };
        let bytes = crate::model::ApeModel::new(net, meta).to_bytes().unwrap();
        let back = crate::model::ApeModel::from_bytes(&bytes, "sigmoid.apemodel", &device).unwrap();
        let again = read(back.net.forward(network_input(&input, dims, &device)));
        assert!(relative(&inference, &again) < 1e-7);
    }

    /// Every block's norm parameters drawn at random (they start at 1 and 0), so that tests
    /// see the affine terms at work.
    fn with_random_norm_parameters(mut net: ApeNet, device: &Device) -> ApeNet {
        for (i, block) in net.blocks_mut().enumerate() {
            let c = block.norm.gamma.dims()[0];
            let draw = |seed: u64, offset: f32| {
                let v: Vec<f32> = values(c, seed).iter().map(|v| v + offset).collect();
                Param::from_tensor(Tensor::from_data(TensorData::new(v, [c]), device))
            };
            block.norm.gamma = draw(100 + i as u64, 0.5);
            block.norm.beta = draw(200 + i as u64, -0.5);
            if block.conv.bias.is_some() {
                block.conv.bias = Some(draw(300 + i as u64, 0.0));
            }
        }
        net
    }

    #[test]
    fn layer_norm_blocks_compute_the_same_in_training_and_inference_and_cpu_net_follows() {
        let device = crate::model::backend::cpu().device;
        let batch = ApeNetConfig::new().with_context_widths(Some(vec![32]));
        for output_scale in [None, Some(4.0)] {
            let config = batch
                .clone()
                .with_output_scale(output_scale)
                .with_block_norm(Some(BlockNorm::Layer));
            assert!(config.validate().is_ok());
            assert!(
                !batch
                    .clone()
                    .with_output_scale(output_scale)
                    .grows_into(&config)
            );
            let net = {
                let _init = crate::model::weights::init_lock();
                device.seed(9);
                config.init(&device).with_random_heads(&device)
            };
            let net = with_random_norm_parameters(net, &device);
            assert!(net.stem.layer_norm && net.encoders[1].blocks[1].layer_norm);
            // The layer norm's blocks keep their convolutions' biases (a batch norm's drop them).
            let names: Vec<String> = net.named_tensors().into_iter().map(|t| t.name).collect();
            assert!(names.contains(&"stem.conv.bias".to_owned()));
            // So the stem tells a uniform patch's intensity: without a bias its layer norm
            // would see only the direction of `W x`, the same at every intensity.
            let uniform = |v: f32| {
                let x = Tensor::<5>::full([1, 1, 8, 8, 8], v, &device);
                read(net.stem.forward(x))
            };
            assert!(relative(&uniform(0.2), &uniform(0.6)) > 1e-3);

            let dims = [64usize, 64, 96];
            let input = image(dims);
            let inference = read(net.forward(network_input(&input, dims, &device)));
            let ours = net.cpu_inference().unwrap().forward(&input, dims);
            let apart = relative(&inference, &ours);
            assert!(apart < 1e-4, "cpu_net, output {output_scale:?}: {apart}");

            // Training mode: the blocks normalise as at inference, so with the sigmoid output
            // (no batch statistics anywhere) the whole network computes the same values.
            let autodiff = device.clone().autodiff();
            let training = net.clone().to_device(&autodiff).train();
            let out = training.forward(network_input(&input, dims, &autodiff));
            if output_scale.is_some() {
                let apart = relative(&inference, &read(out.clone()));
                assert!(apart < 1e-5, "training against inference: {apart}");
            }
            let grads = (out.clone() * out).sum().backward();
            let gamma = training.encoders[0].blocks[0].norm.gamma.val().grad(&grads);
            let beta = training.decoders[0].blocks[1].norm.beta.val().grad(&grads);
            for g in [gamma, beta] {
                let g = g.map(|g| g.into_data().try_into_vec::<f32>().unwrap());
                assert!(g.is_some_and(|g| g.iter().any(|v| v.abs() > 0.0)));
            }

            let meta = crate::model::ModelMeta {
                net: config,
                ..crate::model::ModelMeta::fresh("layer norm".to_owned())
            };
            let bytes = crate::model::ApeModel::new(net, meta).to_bytes().unwrap();
            let back =
                crate::model::ApeModel::from_bytes(&bytes, "layer-norm.apemodel", &device).unwrap();
            assert!(back.net.stem.layer_norm);
            let again = read(back.net.forward(network_input(&input, dims, &device)));
            assert!(relative(&inference, &again) < 1e-7);
        }
    }

    #[test]
    fn the_channel_layer_norm_centres_and_scales_each_voxel_over_its_channels() {
        let device = crate::model::backend::cpu().device;
        let (c, cells) = (5usize, 2 * 3 * 4 * 2);
        let x = Tensor::<5>::from_data(
            TensorData::new(values(c * cells, 3), [2, c, 3, 4, 2]),
            &device,
        )
        .mul_scalar(7.0);
        let gamma = Tensor::<1>::from_data(TensorData::new(vec![2.0f32; c], [c]), &device);
        let beta = Tensor::<1>::from_data(TensorData::new(vec![-1.0f32; c], [c]), &device);
        let y = channel_layer_norm(x, gamma, beta, 1e-5)
            .add_scalar(1.0)
            .div_scalar(2.0);
        let mean = read(y.clone().mean_dim(1));
        let variance = read(y.powi_scalar(2).mean_dim(1));
        assert_eq!(mean.len(), cells);
        assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
        assert!(
            variance.iter().all(|v| (v - 1.0).abs() < 1e-3),
            "{variance:?}"
        );
    }
}
