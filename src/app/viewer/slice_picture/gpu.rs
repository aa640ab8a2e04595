//! Slicing and window/level on the GPU: each scan is uploaded once as a 3-D texture (and its APE
//! map as another), and every view is drawn by `shaders/slice.wgsl` inside egui's render pass,
//! so scrolling uploads nothing but a few uniforms. The CPU path ([`super::cpu`]) stays for
//! machines without a wgpu renderer and as the reference the shader is tested against.

use std::collections::HashMap;
use std::sync::Arc;

use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, ScreenDescriptor};
use eframe::wgpu;
use eframe::wgpu::util::DeviceExt;

use ape::ape_map::ApeMap;
use ape::scan::Scan;
use ape::slicing::{SliceGeometry, WindowLevel};

use crate::viewer::state::{OverlayMode, OverlaySettings};

/// The uniforms of one view, laid out as `View` in the shader.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ViewUniforms {
    scan_origin: [f32; 4],
    scan_step_u: [f32; 4],
    scan_step_v: [f32; 4],
    map_origin: [f32; 4],
    map_step_u: [f32; 4],
    map_step_v: [f32; 4],
    picture_window: [f32; 4],
    overlay: [f32; 4],
    output: [f32; 4],
}

impl ViewUniforms {
    /// The uniforms that draw `geometry` of `scan` (and `map`) as the CPU path would.
    pub fn new(
        scan: &Scan,
        map: Option<&ApeMap>,
        geometry: &SliceGeometry,
        window: WindowLevel,
        overlay: &OverlaySettings,
    ) -> Self {
        let walk = |affine: &ape::Affine| {
            let origin = affine.to_voxel(geometry.world_at(0.0, 0.0));
            let u = affine.to_voxel(geometry.world_at(1.0, 0.0)) - origin;
            let v = affine.to_voxel(geometry.world_at(0.0, 1.0)) - origin;
            let four = |d: glam::DVec3| [d.x as f32, d.y as f32, d.z as f32, 0.0];
            (four(origin), four(u), four(v))
        };
        let (scan_origin, scan_step_u, scan_step_v) = walk(scan.volume.affine());
        let (map_origin, map_step_u, map_step_v) =
            map.map_or(([0.0; 4], [0.0; 4], [0.0; 4]), |m| walk(m.affine()));
        let mode = match overlay.mode {
            OverlayMode::Off => 0.0,
            OverlayMode::Channel(c) => 1.0 + c.min(2) as f32,
            OverlayMode::Rgb => 4.0,
        };
        let step = if overlay.isolines && overlay.isoline_step > 0.0 {
            overlay.isoline_step
        } else {
            0.0
        };
        Self {
            scan_origin,
            scan_step_u,
            scan_step_v,
            map_origin,
            map_step_u,
            map_step_v,
            picture_window: [
                geometry.width as f32,
                geometry.height as f32,
                window.level - window.width * 0.5,
                window.width,
            ],
            overlay: [
                overlay.opacity,
                mode,
                step,
                if map.is_some() { 1.0 } else { 0.0 },
            ],
            output: [0.0; 4],
        }
    }
}

/// A scan's textures on the GPU, with the data they were made from (to notice a new map).
struct ScanTextures {
    scan: Arc<Scan>,
    scan_view: wgpu::TextureView,
    map: Option<(Arc<ApeMap>, wgpu::TextureView)>,
}

/// The pipeline and the uploaded scans, kept in egui_wgpu's callback resources.
pub struct SliceRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    empty_map: wgpu::TextureView,
    srgb_target: bool,
    scans: HashMap<usize, ScanTextures>,
    /// This frame's bind groups, by view slot.
    frame: HashMap<String, wgpu::BindGroup>,
}

impl std::fmt::Debug for SliceRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SliceRenderer({} scans)", self.scans.len())
    }
}

impl SliceRenderer {
    /// Builds the pipeline on the renderer's device and keeps it in its callback resources.
    /// Returns `false` where the device cannot hold a scan texture (no GPU slicing then).
    pub fn install(render_state: &egui_wgpu::RenderState) -> bool {
        let device = &render_state.device;
        if device.limits().max_texture_dimension_3d < 512 {
            return false;
        }
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("ape slice shader"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../../../shaders/slice.wgsl").into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D3,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ape slice bindings"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                texture_entry(1),
                texture_entry(2),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("ape slice pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("ape slice pipeline"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: Default::default(),
            },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                targets: &[Some(render_state.target_format.into())],
                compilation_options: Default::default(),
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        let empty_map = texture_3d(
            device,
            &render_state.queue,
            [1, 1, 1],
            wgpu::TextureFormat::Rgba32Float,
            &[0u8; 16],
        );
        render_state
            .renderer
            .write()
            .callback_resources
            .insert(SliceRenderer {
                pipeline,
                layout,
                empty_map,
                srgb_target: render_state.target_format.is_srgb(),
                scans: HashMap::new(),
                frame: HashMap::new(),
            });
        true
    }

    /// The scan's textures, uploaded on first use and again when its map arrives.
    fn textures(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        id: usize,
        scan: &Arc<Scan>,
        map: Option<&Arc<ApeMap>>,
    ) -> Option<&ScanTextures> {
        let stale = self
            .scans
            .get(&id)
            .is_none_or(|t| !Arc::ptr_eq(&t.scan, scan));
        if stale {
            let [nx, ny, nz] = scan.volume.shape();
            let view = texture_3d(
                device,
                queue,
                [nx as u32, ny as u32, nz as u32],
                wgpu::TextureFormat::R32Float,
                bytemuck::cast_slice(scan.volume.data()),
            );
            self.scans.insert(
                id,
                ScanTextures {
                    scan: scan.clone(),
                    scan_view: view,
                    map: None,
                },
            );
        }
        let entry = self.scans.get_mut(&id)?;
        let map_stale = match (&entry.map, map) {
            (Some((old, _)), Some(new)) => !Arc::ptr_eq(old, new),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if let (true, Some(map)) = (map_stale, map) {
            let [nx, ny, nz] = map.shape();
            let texels: Vec<f32> = map
                .cells()
                .data()
                .iter()
                .flat_map(|e| [e[0], e[1], e[2], 0.0])
                .collect();
            let view = texture_3d(
                device,
                queue,
                [nx as u32, ny as u32, nz as u32],
                wgpu::TextureFormat::Rgba32Float,
                bytemuck::cast_slice(&texels),
            );
            entry.map = Some((map.clone(), view));
        }
        Some(entry)
    }
}

/// A 3-D texture filled with `bytes` (texel rows tightly packed, x fastest).
fn texture_3d(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    [w, h, d]: [u32; 3],
    format: wgpu::TextureFormat,
    bytes: &[u8],
) -> wgpu::TextureView {
    let texture = device.create_texture_with_data(
        queue,
        &wgpu::TextureDescriptor {
            label: Some("ape volume"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: d,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D3,
            format,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        bytes,
    );
    texture.create_view(&wgpu::TextureViewDescriptor::default())
}

/// One view drawn by the shader.
#[derive(Debug)]
pub struct SliceCallback {
    pub slot: String,
    pub scan_id: usize,
    pub scan: Arc<Scan>,
    pub map: Option<Arc<ApeMap>>,
    pub uniforms: ViewUniforms,
}

impl CallbackTrait for SliceCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(renderer) = resources.get_mut::<SliceRenderer>() else {
            return Vec::new();
        };
        let mut uniforms = self.uniforms;
        uniforms.output[0] = if renderer.srgb_target { 1.0 } else { 0.0 };
        let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("ape view uniforms"),
            contents: bytemuck::bytes_of(&uniforms),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let Some(textures) =
            renderer.textures(device, queue, self.scan_id, &self.scan, self.map.as_ref())
        else {
            return Vec::new();
        };
        let scan_view = textures.scan_view.clone();
        let map_view = textures.map.as_ref().map(|(_, v)| v.clone());
        let map_view = map_view.unwrap_or_else(|| renderer.empty_map.clone());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("ape view"),
            layout: &renderer.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&scan_view),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&map_view),
                },
            ],
        });
        renderer.frame.insert(self.slot.clone(), bind_group);
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(renderer) = resources.get::<SliceRenderer>() else {
            return;
        };
        let Some(bind_group) = renderer.frame.get(&self.slot) else {
            return;
        };
        render_pass.set_pipeline(&renderer.pipeline);
        render_pass.set_bind_group(0, bind_group, &[]);
        render_pass.draw(0..3, 0..1);
    }
}

/// Whether the renderer has GPU slicing installed.
pub fn available(render_state: Option<&egui_wgpu::RenderState>) -> bool {
    render_state.is_some_and(|rs| {
        rs.renderer
            .read()
            .callback_resources
            .contains::<SliceRenderer>()
    })
}
