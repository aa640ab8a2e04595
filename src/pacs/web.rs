//! DICOMweb: QIDO-RS searches (DICOM JSON) and WADO-RS retrieval of a series
//! (`multipart/related` of `application/dicom` parts), over ureq with timeouts and size caps.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::multipart::{Parts, boundary};
use super::wire::{Tag, tags};
use super::{Control, Limits, PacsError, Query, Series, Study, WebServer, instance_file_name};

/// Largest QIDO-RS answer read (JSON): far above thousands of matches.
const MAX_JSON_BYTES: u64 = 64 << 20;

struct Http<'a> {
    server: &'a WebServer,
    limits: &'a Limits,
    agent: ureq::Agent,
}

impl<'a> Http<'a> {
    fn new(server: &'a WebServer, limits: &'a Limits) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(limits.connect))
            .timeout_per_read(Some(limits.read))
            .timeout_global(Some(limits.total))
            .http_status_as_error(false)
            .build();
        Self {
            server,
            limits,
            agent: config.into(),
        }
    }

    /// GET `path` (below the root; query string included) with `accept`.
    fn get(&self, path: &str, accept: &str) -> Result<ureq::http::Response<ureq::Body>, PacsError> {
        let url = format!("{}{path}", self.server.url);
        let mut request = self.agent.get(&url).header("Accept", accept);
        if let Some(user) = &self.server.user {
            let pair = format!("{user}:{}", self.server.password.as_deref().unwrap_or(""));
            request = request.header(
                "Authorization",
                format!("Basic {}", base64(pair.as_bytes())),
            );
        }
        let response = request.call().map_err(|e| self.error(e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let mut body = response.into_body();
            let text = body
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            return Err(PacsError::Http {
                server: self.server.url.clone(),
                status,
                what: format!("GET {path}"),
                body: text.chars().filter(|c| !c.is_control()).take(300).collect(),
            });
        }
        Ok(response)
    }

    fn error(&self, e: ureq::Error) -> PacsError {
        let server = self.server.url.clone();
        match e {
            ureq::Error::Timeout(_) => PacsError::Timeout {
                server,
                after: self.limits.read,
            },
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => PacsError::Unreachable {
                server,
                detail: e.to_string(),
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                PacsError::Unreachable {
                    server,
                    detail: io.to_string(),
                }
            }
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                PacsError::Timeout {
                    server,
                    after: self.limits.read,
                }
            }
            ureq::Error::BodyExceedsLimit(limit) => PacsError::TooLarge {
                server,
                limit,
                unit: "bytes",
            },
            other => PacsError::protocol(&server, other.to_string()),
        }
    }

    /// A QIDO-RS search: the matches as DICOM JSON objects (204 or an empty body: none).
    fn search(&self, path: &str) -> Result<Vec<serde_json::Map<String, Value>>, PacsError> {
        let response = self.get(path, "application/dicom+json, application/json")?;
        let bytes = response
            .into_body()
            .into_with_config()
            .limit(MAX_JSON_BYTES)
            .read_to_vec()
            .map_err(|e| self.error(e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            PacsError::protocol(
                &self.server.url,
                format!("GET {path}: not DICOM JSON ({e})"),
            )
        })?;
        let Value::Array(items) = value else {
            return Err(PacsError::protocol(
                &self.server.url,
                format!("GET {path}: not a JSON array"),
            ));
        };
        if items.len() > self.limits.max_matches {
            return Err(PacsError::TooLarge {
                server: self.server.url.clone(),
                limit: self.limits.max_matches as u64,
                unit: "matches",
            });
        }
        Ok(items
            .into_iter()
            .filter_map(|v| match v {
                Value::Object(o) => Some(o),
                _ => None,
            })
            .collect())
    }
}

/// The first value of an attribute in a DICOM JSON object, as text (a person name's
/// alphabetic form, numbers as written).
fn text(object: &serde_json::Map<String, Value>, tag: Tag) -> Option<String> {
    let first = object.get(&tags::json_key(tag))?.get("Value")?.get(0)?;
    match first {
        Value::String(s) => Some(s.trim_end_matches(['\0', ' ']).to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Percent-encodes a query value or a path segment. Only what a URL cannot hold literally is
/// encoded: Orthanc (1.10, DICOMweb plugin 1.7) does not decode query values, so the wildcards
/// `*` and `?` and the name separator `^` are sent as they are.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'*'
                    | b'?'
                    | b'^'
                    | b','
                    | b':'
                    | b'@'
                    | b'!'
                    | b'('
                    | b')'
                    | b';'
            )
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A QIDO-RS search that must answer.
pub(super) fn echo(server: &WebServer, limits: &Limits) -> Result<(), PacsError> {
    Http::new(server, limits)
        .search("/studies?limit=1")
        .map(|_| ())
}

fn series_of(object: &serde_json::Map<String, Value>) -> Option<Series> {
    Series::from_attributes(|tag| text(object, tag))
}

/// QIDO-RS studies, then the series of each.
pub(super) fn find(
    server: &WebServer,
    query: &Query,
    limits: &Limits,
) -> Result<Vec<Study>, PacsError> {
    let http = Http::new(server, limits);
    let include = |tag| Some(tags::json_key(tag));
    let studies = http.search(&format!(
        "/studies{}",
        query_string(&[
            ("limit", Some((limits.max_matches + 1).to_string())),
            ("PatientName", query.name_key()),
            ("PatientID", query.patient_id.clone()),
            ("StudyDate", query.date_key()),
            ("ModalitiesInStudy", query.modality.clone()),
            ("includefield", include(tags::STUDY_DESCRIPTION)),
        ])
    ))?;
    let mut found = Vec::new();
    for object in studies {
        let Some(uid) = text(&object, tags::STUDY_INSTANCE_UID).filter(|u| !u.is_empty()) else {
            continue;
        };
        let series = http.search(&format!(
            "/studies/{}/series{}",
            encode(&uid),
            query_string(&[
                ("Modality", query.modality.clone()),
                ("includefield", include(tags::SERIES_DESCRIPTION)),
                (
                    "includefield",
                    include(tags::NUMBER_OF_SERIES_RELATED_INSTANCES)
                ),
            ])
        ))?;
        let series: Vec<Series> = series.iter().filter_map(series_of).collect();
        if series.is_empty() {
            continue;
        }
        found.push(Study::from_attributes(
            uid,
            |tag| text(&object, tag),
            series,
        ));
    }
    Ok(found)
}

/// The study of a series, by a QIDO-RS series search on its UID.
pub(super) fn study_of(
    server: &WebServer,
    series: &str,
    limits: &Limits,
) -> Result<Option<String>, PacsError> {
    let found = Http::new(server, limits).search(&format!(
        "/series{}",
        query_string(&[("SeriesInstanceUID", Some(series.to_owned()))])
    ))?;
    Ok(found
        .iter()
        .find_map(|o| text(o, tags::STUDY_INSTANCE_UID).filter(|u| !u.is_empty())))
}

/// WADO-RS of one series into `folder`: each `application/dicom` part is a DICOM file.
pub(super) fn get_series(
    server: &WebServer,
    study: &str,
    series: &str,
    folder: &Path,
    limits: &Limits,
    control: &Control<'_>,
) -> Result<usize, PacsError> {
    let http = Http::new(server, limits);
    let path = format!("/studies/{}/series/{}", encode(study), encode(series));
    let response = http.get(&path, "multipart/related; type=\"application/dicom\"")?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let boundary = boundary(&content_type).ok_or_else(|| {
        PacsError::protocol(
            &server.url,
            format!("GET {path}: not multipart/related ({content_type})"),
        )
    })?;
    let body = response
        .into_body()
        .into_with_config()
        .limit(limits.max_bytes)
        .reader();
    let mut parts = Parts::new(body, &boundary);
    let cancelled = || control.cancelled();
    let mut written = 0;
    loop {
        let part = match parts.next_part(&cancelled) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(_) if control.cancelled() => return Err(PacsError::Cancelled),
            Err(e) if e.contains("limit") => {
                return Err(PacsError::TooLarge {
                    server: server.url.clone(),
                    limit: limits.max_bytes,
                    unit: "bytes",
                });
            }
            Err(e) if e.contains("timed out") || e.contains("Timeout") || e.contains("timeout") => {
                return Err(PacsError::Timeout {
                    server: server.url.clone(),
                    after: limits.read,
                });
            }
            Err(e) => return Err(PacsError::protocol(&server.url, format!("GET {path}: {e}"))),
        };
        let kind = part
            .content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if !kind.is_empty() && kind != "application/dicom" {
            return Err(PacsError::protocol(
                &server.url,
                format!("GET {path}: a part of type {kind}"),
            ));
        }
        let meta =
            super::store::meta_group(&part.body[..part.body.len().min(64 << 10)]).map_err(|e| {
                PacsError::protocol(
                    &server.url,
                    format!("GET {path}: a part that is not a DICOM file ({e})"),
                )
            })?;
        let instance = meta.text((0x0002, 0x0003)).unwrap_or_default();
        let file = folder.join(instance_file_name(&instance, written));
        std::fs::File::create_new(&file)
            .and_then(|mut f| f.write_all(&part.body))
            .map_err(|e| PacsError::io(&file, e))?;
        written += 1;
        control.report(written, None);
    }
    Ok(written)
}

/// Base64 (standard alphabet, padded), for the basic-auth header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query_string(&[
                ("PatientName", Some("*liver_17^p*".into())),
                ("PatientID", None)
            ]),
            "?PatientName=*liver_17^p*"
        );
    }

    #[test]
    fn json_values_are_read() {
        let v: Value = serde_json::from_str(
            r#"{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "liver_17^patient"}]},
                "00201209": {"vr": "IS", "Value": [119]},
                "0020000E": {"vr": "UI", "Value": ["1.2.3"]}}"#,
        )
        .unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(
            text(o, tags::PATIENT_NAME).as_deref(),
            Some("liver_17^patient")
        );
        let s = series_of(o).unwrap();
        assert_eq!((s.uid.as_str(), s.slices), ("1.2.3", Some(119)));
    }
}
