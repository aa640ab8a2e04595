//! The few DICOM encodings the PACS client writes and reads itself: command sets, query
//! identifiers and file meta groups, in implicit or explicit VR little endian.
//!
//! What a server sends is parsed here rather than by dicom-object, which allocates whatever
//! length an element claims: every length is checked against the bytes actually received,
//! sequences are skipped (no key ape asks for is one), and nesting is bounded.

/// A data element's tag: (group, element).
pub(super) type Tag = (u16, u16);

/// The attributes the client asks for and reads.
pub(super) mod tags {
    use super::Tag;
    pub const SPECIFIC_CHARACTER_SET: Tag = (0x0008, 0x0005);
    pub const STUDY_DATE: Tag = (0x0008, 0x0020);
    pub const QUERY_RETRIEVE_LEVEL: Tag = (0x0008, 0x0052);
    pub const MODALITY: Tag = (0x0008, 0x0060);
    pub const MODALITIES_IN_STUDY: Tag = (0x0008, 0x0061);
    pub const STUDY_DESCRIPTION: Tag = (0x0008, 0x1030);
    pub const SERIES_DESCRIPTION: Tag = (0x0008, 0x103E);
    pub const PATIENT_NAME: Tag = (0x0010, 0x0010);
    pub const PATIENT_ID: Tag = (0x0010, 0x0020);
    pub const STUDY_INSTANCE_UID: Tag = (0x0020, 0x000D);
    pub const SERIES_INSTANCE_UID: Tag = (0x0020, 0x000E);
    pub const SERIES_NUMBER: Tag = (0x0020, 0x0011);
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: Tag = (0x0020, 0x1209);

    /// The hexadecimal key of a tag in the DICOM JSON model (`0020000D`).
    pub fn json_key(tag: Tag) -> String {
        format!("{:04X}{:04X}", tag.0, tag.1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    ImplicitLittle,
    ExplicitLittle,
}

pub(super) const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub(super) const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

impl Syntax {
    /// The syntax of a transfer syntax UID, for the ones ape negotiates for identifiers.
    pub(super) fn of(uid: &str) -> Option<Self> {
        match uid.trim_end_matches(['\0', ' ']) {
            IMPLICIT_LE => Some(Self::ImplicitLittle),
            EXPLICIT_LE => Some(Self::ExplicitLittle),
            _ => None,
        }
    }
}

/// Elements to encode, kept in tag order.
#[derive(Debug, Default)]
pub(super) struct Elements(Vec<(Tag, [u8; 2], Vec<u8>)>);

impl Elements {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// A text value (UI padded with NUL, other VRs with a space, to an even length).
    pub(super) fn text(mut self, tag: Tag, vr: &[u8; 2], value: &str) -> Self {
        let mut bytes = value.as_bytes().to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(if vr == b"UI" { 0 } else { b' ' });
        }
        self.0.push((tag, *vr, bytes));
        self
    }

    pub(super) fn u16(mut self, tag: Tag, value: u16) -> Self {
        self.0.push((tag, *b"US", value.to_le_bytes().to_vec()));
        self
    }

    pub(super) fn u32(mut self, tag: Tag, value: u32) -> Self {
        self.0.push((tag, *b"UL", value.to_le_bytes().to_vec()));
        self
    }

    pub(super) fn bytes(mut self, tag: Tag, vr: &[u8; 2], value: &[u8]) -> Self {
        self.0.push((tag, *vr, value.to_vec()));
        self
    }

    /// The encoded elements.
    pub(super) fn encode(mut self, syntax: Syntax) -> Vec<u8> {
        self.0.sort_by_key(|(tag, _, _)| *tag);
        let mut out = Vec::new();
        for ((group, element), vr, value) in &self.0 {
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&element.to_le_bytes());
            let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
            match syntax {
                Syntax::ImplicitLittle => out.extend_from_slice(&len.to_le_bytes()),
                Syntax::ExplicitLittle => {
                    out.extend_from_slice(vr);
                    if long_length(vr) {
                        out.extend_from_slice(&[0, 0]);
                        out.extend_from_slice(&len.to_le_bytes());
                    } else {
                        out.extend_from_slice(
                            &u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes(),
                        );
                    }
                }
            }
            out.extend_from_slice(value);
        }
        out
    }

    /// A command set: the elements preceded by their CommandGroupLength (implicit VR).
    pub(super) fn encode_command(self) -> Vec<u8> {
        let body = self.encode(Syntax::ImplicitLittle);
        let mut out = Elements::new()
            .u32((0, 0), u32::try_from(body.len()).unwrap_or(u32::MAX))
            .encode(Syntax::ImplicitLittle);
        out.extend_from_slice(&body);
        out
    }
}

/// VRs whose explicit length field is 4 bytes after 2 reserved ones.
fn long_length(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

const UNDEFINED: u32 = u32::MAX;
const ITEM_END: Tag = (0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = (0xFFFE, 0xE0DD);
const MAX_DEPTH: usize = 16;

/// The top-level elements of an encoded data set (values of sequences left out).
#[derive(Debug, Default)]
pub(super) struct Parsed(Vec<(Tag, Vec<u8>)>);

impl Parsed {
    pub(super) fn parse(bytes: &[u8], syntax: Syntax) -> Result<Self, String> {
        Self::parse_while(bytes, syntax, |_| true).map(|(p, _)| p)
    }

    /// Parses elements while `keep` accepts their tag; returns them and where it stopped.
    pub(super) fn parse_while(
        bytes: &[u8],
        syntax: Syntax,
        keep: impl Fn(Tag) -> bool,
    ) -> Result<(Self, usize), String> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (tag, vr, len, header) = header(bytes, pos, syntax)?;
            if !keep(tag) {
                break;
            }
            pos += header;
            if len == UNDEFINED {
                pos = skip_undefined(bytes, pos, syntax, 0)?;
                continue;
            }
            let end = pos
                .checked_add(len as usize)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| format!("element {tag:04X?} claims {len} bytes past the end"))?;
            if vr != Some(*b"SQ") {
                out.push((tag, bytes[pos..end].to_vec()));
            }
            pos = end;
        }
        Ok((Self(out), pos))
    }

    fn raw(&self, tag: Tag) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v.as_slice())
    }

    /// A text value, trailing padding removed (lossy for bytes that are not UTF-8).
    pub(super) fn text(&self, tag: Tag) -> Option<String> {
        self.raw(tag).map(|v| {
            String::from_utf8_lossy(v)
                .trim_end_matches(['\0', ' '])
                .trim_start()
                .to_owned()
        })
    }

    pub(super) fn u16(&self, tag: Tag) -> Option<u16> {
        self.raw(tag)
            .and_then(|v| v.get(..2))
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
}

/// Tag, explicit VR (if any), value length and header size of an element.
type Header = (Tag, Option<[u8; 2]>, u32, usize);

/// The [`Header`] of the element at `pos`.
fn header(bytes: &[u8], pos: usize, syntax: Syntax) -> Result<Header, String> {
    let b = |i: usize| {
        bytes
            .get(pos + i)
            .copied()
            .ok_or("truncated element header")
    };
    let u16_at = |i| -> Result<u16, String> { Ok(u16::from_le_bytes([b(i)?, b(i + 1)?])) };
    let u32_at = |i| -> Result<u32, String> {
        Ok(u32::from_le_bytes([b(i)?, b(i + 1)?, b(i + 2)?, b(i + 3)?]))
    };
    let tag = (u16_at(0)?, u16_at(2)?);
    // Items and delimiters have no VR in either syntax.
    if syntax == Syntax::ImplicitLittle || tag.0 == 0xFFFE {
        return Ok((tag, None, u32_at(4)?, 8));
    }
    let vr = [b(4)?, b(5)?];
    if !vr.iter().all(u8::is_ascii_uppercase) {
        return Err(format!("element {tag:04X?} has no valid VR"));
    }
    if long_length(&vr) {
        Ok((tag, Some(vr), u32_at(8)?, 12))
    } else {
        Ok((tag, Some(vr), u32::from(u16_at(6)?), 8))
    }
}

/// Skips the value of an undefined-length sequence starting at `pos`; returns the end.
fn skip_undefined(
    bytes: &[u8],
    mut pos: usize,
    syntax: Syntax,
    depth: usize,
) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err("sequences nested too deep".into());
    }
    loop {
        let (tag, _, len, header) = header(bytes, pos, syntax)?;
        pos += header;
        if tag == SEQUENCE_END || tag == ITEM_END {
            return Ok(pos);
        }
        // Items and nested sequences of undefined length end with their own delimiter.
        pos = if len == UNDEFINED {
            skip_undefined(bytes, pos, syntax, depth + 1)?
        } else {
            skip_defined(bytes, pos, len)?
        };
    }
}

fn skip_defined(bytes: &[u8], pos: usize, len: u32) -> Result<usize, String> {
    pos.checked_add(len as usize)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format!("a value claims {len} bytes past the end"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn elements_round_trip_in_both_syntaxes() {
        for syntax in [Syntax::ImplicitLittle, Syntax::ExplicitLittle] {
            let bytes = Elements::new()
                .text((0x0020, 0x000D), b"UI", "1.2.3")
                .text((0x0008, 0x0052), b"CS", "STUDY")
                .u16((0x0000, 0x0100), 0x8020)
                .encode(syntax);
            let parsed = Parsed::parse(&bytes, syntax).unwrap();
            assert_eq!(parsed.text((0x0020, 0x000D)).as_deref(), Some("1.2.3"));
            assert_eq!(parsed.text((0x0008, 0x0052)).as_deref(), Some("STUDY"));
            assert_eq!(parsed.u16((0x0000, 0x0100)), Some(0x8020));
        }
    }

    #[test]
    fn undefined_sequences_are_skipped() {
        let mut bytes = Elements::new()
            .text((0x0008, 0x0005), b"CS", "ISO_IR 100")
            .encode(Syntax::ExplicitLittle);
        // (0008,1115) SQ, undefined length, one undefined-length item holding one element.
        bytes.extend_from_slice(&[
            0x08, 0, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend(
            Elements::new()
                .text((0x0008, 0x1150), b"UI", "1.2")
                .encode(Syntax::ExplicitLittle),
        );
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        bytes.extend(
            Elements::new()
                .text((0x0020, 0x000D), b"UI", "9.9")
                .encode(Syntax::ExplicitLittle),
        );
        let parsed = Parsed::parse(&bytes, Syntax::ExplicitLittle).unwrap();
        assert_eq!(parsed.text((0x0020, 0x000D)).as_deref(), Some("9.9"));
        assert_eq!(parsed.text((0x0008, 0x1150)), None);
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let mut bytes = vec![0x10, 0, 0x10, 0, b'P', b'N', 0xFF, 0x7F];
        bytes.extend_from_slice(b"ab");
        assert!(Parsed::parse(&bytes, Syntax::ExplicitLittle).is_err());
        assert!(Parsed::parse(&[1, 2, 3], Syntax::ImplicitLittle).is_err());
        // Sequences that never end, and nesting past the bound.
        let open = [0x08, 0, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(Parsed::parse(&open, Syntax::ImplicitLittle).is_err());
        let deep: Vec<u8> = open.iter().copied().cycle().take(8 * 100).collect();
        assert!(Parsed::parse(&deep, Syntax::ImplicitLittle).is_err());
        // Random bytes never panic.
        let mut x = 12345u32;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = Parsed::parse(&bytes, Syntax::ExplicitLittle);
            let _ = Parsed::parse(&bytes, Syntax::ImplicitLittle);
        }
    }
}
