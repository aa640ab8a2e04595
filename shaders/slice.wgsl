// One slice view on the GPU: the scan as a 3-D texture, sampled at the nearest voxel (as the
// CPU path and most viewers show CT), through window/level, with the APE map (a 3-D texture of
// cells) blended over it trilinearly: one channel through the colour map or the three as RGB,
// and optional iso-lines. Every rule here mirrors src/app/viewer/slice_picture/cpu.rs, pixel for pixel.

struct View {
    // Continuous scan voxel index of picture pixel (0, 0), and its change per pixel.
    scan_origin: vec4<f32>,
    scan_step_u: vec4<f32>,
    scan_step_v: vec4<f32>,
    // The same for the APE map's cells.
    map_origin: vec4<f32>,
    map_step_u: vec4<f32>,
    map_step_v: vec4<f32>,
    // Picture width and height (pixels), window low edge and width (HU).
    picture_window: vec4<f32>,
    // Opacity; mode (0 off, 1–3 one channel, 4 RGB); iso-line step (0: none); 1 when a map is bound.
    overlay: vec4<f32>,
    // x: 1 when the target stores sRGB (the hardware encodes: write linear values).
    output: vec4<f32>,
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var scan: texture_3d<f32>;
@group(0) @binding(2) var cells: texture_3d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    // Position in picture pixels from the view's top-left corner.
    @location(0) picture: vec2<f32>,
};

// One triangle covering the viewport, which egui sets to the view's rectangle.
@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VertexOut {
    let x = f32((i << 1u) & 2u);
    let y = f32(i & 2u);
    var out: VertexOut;
    out.position = vec4<f32>(x * 2.0 - 1.0, 1.0 - y * 2.0, 0.0, 1.0);
    out.picture = vec2<f32>(x, y) * view.picture_window.xy;
    return out;
}

// Embedding values to 0…1: ±2.5 around zero (the output batch norm's unit variance).
fn unit(v: f32) -> f32 {
    return clamp((v + 2.5) / 5.0, 0.0, 1.0);
}

fn colour_map(t: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 5>(
        vec3<f32>(0.19, 0.07, 0.55),
        vec3<f32>(0.10, 0.60, 0.90),
        vec3<f32>(0.20, 0.80, 0.30),
        vec3<f32>(0.98, 0.85, 0.15),
        vec3<f32>(0.85, 0.10, 0.10),
    );
    let x = clamp(t, 0.0, 1.0) * 4.0;
    let i = min(u32(floor(x)), 3u);
    let f = x - f32(i);
    return round((stops[i] * (1.0 - f) + stops[i + 1u] * f) * 255.0);
}

// The scan voxel shown at picture pixel p, or (-1, …) outside the scan.
fn scan_voxel(p: vec2<f32>) -> vec3<i32> {
    let v = view.scan_origin.xyz + view.scan_step_u.xyz * p.x + view.scan_step_v.xyz * p.y;
    let dims = vec3<f32>(textureDimensions(scan));
    if any(v < vec3<f32>(-0.5)) || any(v >= dims - 0.5) {
        return vec3<i32>(-1);
    }
    return clamp(vec3<i32>(floor(v + 0.5)), vec3<i32>(0), vec3<i32>(dims) - 1);
}

// The embedding at picture pixel p (trilinear over cells, edges clamped); w = 0 outside.
fn embedding(p: vec2<f32>) -> vec4<f32> {
    let c = view.map_origin.xyz + view.map_step_u.xyz * p.x + view.map_step_v.xyz * p.y;
    let n = vec3<f32>(textureDimensions(cells));
    if any(c < vec3<f32>(-0.5)) || any(c > n - 0.5) {
        return vec4<f32>(0.0);
    }
    let v = clamp(c, vec3<f32>(0.0), n - 1.0);
    let lo = floor(v);
    let f = v - lo;
    let a = vec3<i32>(lo);
    let b = min(a + 1, vec3<i32>(n) - 1);
    let c00 = mix(textureLoad(cells, vec3<i32>(a.x, a.y, a.z), 0), textureLoad(cells, vec3<i32>(b.x, a.y, a.z), 0), f.x);
    let c10 = mix(textureLoad(cells, vec3<i32>(a.x, b.y, a.z), 0), textureLoad(cells, vec3<i32>(b.x, b.y, a.z), 0), f.x);
    let c01 = mix(textureLoad(cells, vec3<i32>(a.x, a.y, b.z), 0), textureLoad(cells, vec3<i32>(b.x, a.y, b.z), 0), f.x);
    let c11 = mix(textureLoad(cells, vec3<i32>(a.x, b.y, b.z), 0), textureLoad(cells, vec3<i32>(b.x, b.y, b.z), 0), f.x);
    let e = mix(mix(c00, c10, f.y), mix(c01, c11, f.y), f.z);
    return vec4<f32>(e.xyz, 1.0);
}

// The embedding where the scan is shown at pixel p (none outside the scan or the map).
fn shown_embedding(p: vec2<f32>) -> vec4<f32> {
    if scan_voxel(p).x < 0 {
        return vec4<f32>(0.0);
    }
    return embedding(p);
}

fn crosses_level(here: vec4<f32>, other: vec4<f32>, mode: u32, step: f32) -> bool {
    if other.w < 0.5 {
        return false;
    }
    for (var c = 0u; c < 3u; c = c + 1u) {
        let shown = mode == 4u || mode - 1u == c;
        if shown && floor(here[c] / step) != floor(other[c] / step) {
            return true;
        }
    }
    return false;
}

fn to_target(rgb255: vec3<f32>) -> vec4<f32> {
    let c = rgb255 / 255.0;
    if view.output.x > 0.5 {
        // sRGB-encoded values, decoded so that the sRGB target stores them as they are.
        let low = c / 12.92;
        let high = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
        return vec4<f32>(select(high, low, c <= vec3<f32>(0.04045)), 1.0);
    }
    return vec4<f32>(c, 1.0);
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let p = floor(in.picture);
    let voxel = scan_voxel(p);
    if voxel.x < 0 {
        return to_target(vec3<f32>(0.0));
    }
    let hu = textureLoad(scan, voxel, 0).r;
    let low = view.picture_window.z;
    let width = view.picture_window.w;
    var rgb = vec3<f32>(round(clamp((hu - low) / max(width, 1.0), 0.0, 1.0) * 255.0));
    let mode = u32(view.overlay.y + 0.5);
    if view.overlay.w < 0.5 || mode == 0u {
        return to_target(rgb);
    }
    let e = embedding(p);
    if e.w < 0.5 {
        return to_target(rgb);
    }
    var colour: vec3<f32>;
    if mode == 4u {
        colour = floor(vec3<f32>(unit(e.x), unit(e.y), unit(e.z)) * 255.0);
    } else {
        colour = colour_map(unit(e[mode - 1u]));
    }
    let alpha = clamp(view.overlay.x, 0.0, 1.0);
    rgb = round(rgb * (1.0 - alpha) + colour * alpha);
    let step = view.overlay.z;
    if step > 0.0 && p.x >= 1.0 && p.y >= 1.0 {
        let left = shown_embedding(p - vec2<f32>(1.0, 0.0));
        let above = shown_embedding(p - vec2<f32>(0.0, 1.0));
        if crosses_level(e, left, mode, step) || crosses_level(e, above, mode, step) {
            rgb = vec3<f32>(255.0);
        }
    }
    return to_target(rgb);
}
