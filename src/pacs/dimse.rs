//! DIMSE over dicom-ul associations: C-ECHO, C-FIND (study root, study and series levels) and
//! C-GET of one series, whose C-STORE sub-operations come back on the same association (so ape
//! needs no storage SCP of its own and no port open to the server).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};

use super::wire::{EXPLICIT_LE, Elements, IMPLICIT_LE, Parsed, Syntax, Tag, tags};
use super::{
    CT_IMAGE_STORAGE, Control, Deadline, DimseServer, Limits, PacsError, Query, Series, Study,
    instance_file_name,
};

const VERIFICATION: &str = "1.2.840.10008.1.1";
const FIND_STUDY_ROOT: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const GET_STUDY_ROOT: &str = "1.2.840.10008.5.1.4.1.2.2.3";
/// Lossless syntaxes accepted for the retrieved slices, one presentation context each, so the
/// server can send a slice as stored when it is one of these and never picks a lossy one.
const STORAGE_SYNTAXES: [&str; 4] = [
    EXPLICIT_LE,
    IMPLICIT_LE,
    "1.2.840.10008.1.2.4.70", // JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.5",    // RLE Lossless
];

/// Our implementation class UID in the meta header of the files we write (a UUID-derived
/// root, 2.25).
const IMPLEMENTATION_CLASS_UID: &str = "2.25.163291837461726354809213472910384756";

/// Largest PDU we accept: larger PDUs mean fewer round trips for slices.
const MAX_PDU: u32 = 131_072;
/// Largest command set accepted (a real one is a few hundred bytes).
const MAX_COMMAND_BYTES: usize = 64 << 10;

mod command {
    use super::Tag;
    pub const AFFECTED_SOP_CLASS: Tag = (0x0000, 0x0002);
    pub const FIELD: Tag = (0x0000, 0x0100);
    pub const MESSAGE_ID: Tag = (0x0000, 0x0110);
    pub const RESPONDED_TO: Tag = (0x0000, 0x0120);
    pub const PRIORITY: Tag = (0x0000, 0x0700);
    pub const DATA_SET_TYPE: Tag = (0x0000, 0x0800);
    pub const STATUS: Tag = (0x0000, 0x0900);
    pub const ERROR_COMMENT: Tag = (0x0000, 0x0902);
    pub const AFFECTED_SOP_INSTANCE: Tag = (0x0000, 0x1000);
    pub const REMAINING: Tag = (0x0000, 0x1020);
    pub const COMPLETED: Tag = (0x0000, 0x1021);
    pub const FAILED: Tag = (0x0000, 0x1022);
    pub const WARNING: Tag = (0x0000, 0x1023);

    pub const NO_DATA_SET: u16 = 0x0101;
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
}

/// A message received: its presentation context, command set and data set.
struct Message {
    context: u8,
    command: Parsed,
    data: Option<Vec<u8>>,
}

impl Message {
    fn field(&self) -> Option<u16> {
        self.command.u16(command::FIELD)
    }

    fn status(&self) -> Option<u16> {
        self.command.u16(command::STATUS)
    }
}

/// An open association with its deadline and byte budget.
struct Session<'a> {
    association: Option<ClientAssociation<TcpStream>>,
    server: String,
    limits: &'a Limits,
    deadline: Deadline,
    received: u64,
    next_message_id: u16,
}

/// What a presentation context is proposed for.
struct Proposal<'a> {
    abstract_syntax: &'a str,
    transfer_syntaxes: Vec<&'a str>,
}

impl<'a> Session<'a> {
    fn open(
        server: &DimseServer,
        limits: &'a Limits,
        proposals: &[Proposal<'_>],
        scp_roles: &[&str],
    ) -> Result<Self, PacsError> {
        let name = super::Server::Dimse(server.clone()).name();
        let deadline = Deadline::after(limits.total);
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(server.calling_aet.as_str())
            .called_ae_title(server.called_aet.as_str())
            .max_pdu_length(MAX_PDU)
            .connection_timeout(limits.connect)
            .read_timeout(limits.read)
            .write_timeout(limits.read);
        for p in proposals {
            options =
                options.with_presentation_context(p.abstract_syntax, p.transfer_syntaxes.clone());
        }
        for sop in scp_roles {
            options = options.with_role_selection(*sop, false, true);
        }
        let association = options
            .establish((server.host.as_str(), server.port))
            .map_err(|e| ul_error(&name, limits, e))?;
        Ok(Self {
            association: Some(association),
            server: name,
            limits,
            deadline,
            received: 0,
            next_message_id: 1,
        })
    }

    fn association(&mut self) -> Result<&mut ClientAssociation<TcpStream>, PacsError> {
        self.association
            .as_mut()
            .ok_or_else(|| PacsError::protocol(&self.server, "the association is closed"))
    }

    /// The accepted context for an abstract syntax, with its transfer syntax.
    fn context_for(&mut self, abstract_syntax: &str) -> Result<(u8, Syntax), PacsError> {
        let server = self.server.clone();
        let contexts = self.association()?.presentation_contexts();
        contexts
            .iter()
            .filter(|c| {
                c.reason == PresentationContextResultReason::Acceptance
                    && c.abstract_syntax.trim_end_matches('\0') == abstract_syntax
            })
            .find_map(|c| Syntax::of(&c.transfer_syntax).map(|s| (c.id, s)))
            .ok_or_else(|| PacsError::Rejected {
                server,
                reason: format!("no presentation context accepted for {abstract_syntax}"),
            })
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    fn send(
        &mut self,
        context: u8,
        command: Elements,
        data: Option<Vec<u8>>,
    ) -> Result<(), PacsError> {
        let server = self.server.clone();
        let limits = *self.limits;
        let mut values = vec![PDataValue {
            presentation_context_id: context,
            value_type: PDataValueType::Command,
            is_last: true,
            data: command.encode_command(),
        }];
        let association = self.association()?;
        if let Some(data) = data {
            // Identifiers are small; one PDU holds them unless the server's PDU is tiny.
            let room = association.acceptor_max_pdu_length().saturating_sub(64) as usize;
            if data.len() > room.max(1024) {
                return Err(PacsError::protocol(
                    &server,
                    "the query does not fit the server's PDU size",
                ));
            }
            association
                .send(&Pdu::PData { data: values })
                .map_err(|e| ul_error(&server, &limits, e))?;
            values = vec![PDataValue {
                presentation_context_id: context,
                value_type: PDataValueType::Data,
                is_last: true,
                data,
            }];
        }
        association
            .send(&Pdu::PData { data: values })
            .map_err(|e| ul_error(&server, &limits, e))
    }

    /// The next whole message (command, then its data set if it has one), within the deadline
    /// and the byte budget.
    fn receive(&mut self, control: &Control<'_>) -> Result<Message, PacsError> {
        let mut command_bytes = Vec::new();
        let mut data_bytes = Vec::new();
        let mut command: Option<Parsed> = None;
        let mut context = 0;
        let mut data_done = false;
        loop {
            if control.cancelled() {
                return Err(PacsError::Cancelled);
            }
            let left = self.deadline.left(&self.server)?;
            let server = self.server.clone();
            let limits = *self.limits;
            let association = self.association()?;
            // Each read waits at most the stall limit, and never past the deadline.
            let _ = association
                .inner_stream()
                .set_read_timeout(Some(left.min(limits.read)));
            let pdu = association
                .receive()
                .map_err(|e| ul_error(&server, &limits, e))?;
            let values = match pdu {
                Pdu::PData { data } => data,
                Pdu::AbortRQ { source } => {
                    self.association = None;
                    return Err(PacsError::protocol(
                        &server,
                        format!("the server aborted the association ({source:?})"),
                    ));
                }
                Pdu::ReleaseRQ => {
                    return Err(PacsError::protocol(
                        &server,
                        "the server released the association in the middle of an operation",
                    ));
                }
                other => {
                    return Err(PacsError::protocol(
                        &server,
                        format!("unexpected {} PDU", pdu_name(&other)),
                    ));
                }
            };
            for value in values {
                context = value.presentation_context_id;
                match value.value_type {
                    PDataValueType::Command => {
                        if command_bytes.len() + value.data.len() > MAX_COMMAND_BYTES {
                            return Err(PacsError::protocol(&server, "a command set over 64 KiB"));
                        }
                        command_bytes.extend_from_slice(&value.data);
                        if value.is_last {
                            let parsed = Parsed::parse(&command_bytes, Syntax::ImplicitLittle)
                                .map_err(|e| {
                                    PacsError::protocol(&server, format!("bad command set: {e}"))
                                })?;
                            command = Some(parsed);
                        }
                    }
                    PDataValueType::Data => {
                        self.received += value.data.len() as u64;
                        if self.received > limits.max_bytes {
                            return Err(PacsError::TooLarge {
                                server,
                                limit: limits.max_bytes,
                                unit: "bytes",
                            });
                        }
                        data_bytes.extend_from_slice(&value.data);
                        data_done |= value.is_last;
                    }
                }
            }
            if let Some(parsed) = &command {
                let has_data = parsed.u16(command::DATA_SET_TYPE) != Some(command::NO_DATA_SET);
                if !has_data || data_done {
                    return Ok(Message {
                        context,
                        command: command.take().unwrap_or_default(),
                        data: has_data.then_some(data_bytes),
                    });
                }
            }
        }
    }

    /// A graceful release; a server that does not answer it is left (the socket closes).
    fn release(mut self) {
        if let Some(mut a) = self.association.take() {
            let _ = a
                .inner_stream()
                .set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = a.release();
        }
    }

    fn abort(&mut self) {
        if let Some(a) = self.association.take() {
            let _ = a.abort();
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // An operation that failed half-way leaves an association the server should drop.
        self.abort();
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "unknown",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}

/// A dicom-ul error as what happened: the server unreachable, the association rejected, a
/// timeout, or a protocol error.
fn ul_error(server: &str, limits: &Limits, e: dicom_ul::association::Error) -> PacsError {
    use dicom_ul::association::Error as Ul;
    // The io::Error at the bottom of the chain says whether a read timed out.
    let mut io_kind = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut chain = Vec::new();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        chain.push(c.to_string());
        cause = c.source();
    }
    chain.dedup();
    let detail = chain.join(": ");
    if matches!(
        io_kind,
        Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    ) {
        return PacsError::Timeout {
            server: server.to_owned(),
            after: limits.read,
        };
    }
    match e {
        Ul::Rejected { association_rj, .. } => PacsError::Rejected {
            server: server.to_owned(),
            reason: format!("{} ({:?})", association_rj.source, association_rj.result),
        },
        Ul::NoAcceptedPresentationContexts { .. } => PacsError::Rejected {
            server: server.to_owned(),
            reason: "no presentation context accepted (the server does not offer the service)"
                .into(),
        },
        Ul::Connect { .. } | Ul::ToAddress { .. } => PacsError::Unreachable {
            server: server.to_owned(),
            detail,
        },
        _ => PacsError::protocol(server, detail),
    }
}

/// C-ECHO.
pub(super) fn echo(server: &DimseServer, limits: &Limits) -> Result<(), PacsError> {
    let proposals = [Proposal {
        abstract_syntax: VERIFICATION,
        transfer_syntaxes: vec![EXPLICIT_LE, IMPLICIT_LE],
    }];
    let mut session = Session::open(server, limits, &proposals, &[])?;
    let (context, _) = session.context_for(VERIFICATION)?;
    let id = session.message_id();
    let rq = Elements::new()
        .text(command::AFFECTED_SOP_CLASS, b"UI", VERIFICATION)
        .u16(command::FIELD, command::C_ECHO_RQ)
        .u16(command::MESSAGE_ID, id)
        .u16(command::DATA_SET_TYPE, command::NO_DATA_SET);
    session.send(context, rq, None)?;
    let rsp = session.receive(&Control::default())?;
    check_response(&session.server, &rsp, command::C_ECHO_RSP, "C-ECHO")?;
    match rsp.status() {
        Some(0) => {
            session.release();
            Ok(())
        }
        status => Err(status_error(&session.server, "C-ECHO", status, &rsp)),
    }
}

fn check_response(
    server: &str,
    rsp: &Message,
    field: u16,
    operation: &str,
) -> Result<(), PacsError> {
    if rsp.field() == Some(field) {
        Ok(())
    } else {
        Err(PacsError::protocol(
            server,
            format!(
                "expected a {operation} response, got command 0x{:04X}",
                rsp.field().unwrap_or(0)
            ),
        ))
    }
}

fn status_error(
    server: &str,
    operation: &'static str,
    status: Option<u16>,
    rsp: &Message,
) -> PacsError {
    PacsError::Status {
        server: server.to_owned(),
        operation,
        status: status.unwrap_or(0xFFFF),
        comment: rsp.command.text(command::ERROR_COMMENT).unwrap_or_default(),
    }
}

/// One C-FIND on an open session: the identifiers of all matches.
fn c_find(session: &mut Session<'_>, identifier: Elements) -> Result<Vec<Parsed>, PacsError> {
    let (context, syntax) = session.context_for(FIND_STUDY_ROOT)?;
    let id = session.message_id();
    let rq = Elements::new()
        .text(command::AFFECTED_SOP_CLASS, b"UI", FIND_STUDY_ROOT)
        .u16(command::FIELD, command::C_FIND_RQ)
        .u16(command::MESSAGE_ID, id)
        .u16(command::PRIORITY, 0)
        .u16(command::DATA_SET_TYPE, 0x0000);
    session.send(context, rq, Some(identifier.encode(syntax)))?;
    let mut matches = Vec::new();
    loop {
        let rsp = session.receive(&Control::default())?;
        check_response(&session.server, &rsp, command::C_FIND_RSP, "C-FIND")?;
        match rsp.status() {
            Some(0xFF00 | 0xFF01) => {
                let data = rsp.data.as_deref().unwrap_or_default();
                let parsed = Parsed::parse(data, syntax).map_err(|e| {
                    PacsError::protocol(&session.server, format!("bad C-FIND match: {e}"))
                })?;
                matches.push(parsed);
                if matches.len() > session.limits.max_matches {
                    return Err(PacsError::TooLarge {
                        server: session.server.clone(),
                        limit: session.limits.max_matches as u64,
                        unit: "matches",
                    });
                }
            }
            Some(0x0000) => return Ok(matches),
            status => return Err(status_error(&session.server, "C-FIND", status, &rsp)),
        }
    }
}

fn find_session<'a>(server: &DimseServer, limits: &'a Limits) -> Result<Session<'a>, PacsError> {
    let proposals = [Proposal {
        abstract_syntax: FIND_STUDY_ROOT,
        transfer_syntaxes: vec![EXPLICIT_LE, IMPLICIT_LE],
    }];
    Session::open(server, limits, &proposals, &[])
}

/// Keys asked for at series level, with the study and optional filters.
fn series_identifier(
    study: Option<&str>,
    series: Option<&str>,
    modality: Option<&str>,
) -> Elements {
    Elements::new()
        .text(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 192")
        .text(tags::QUERY_RETRIEVE_LEVEL, b"CS", "SERIES")
        .text(tags::STUDY_INSTANCE_UID, b"UI", study.unwrap_or(""))
        .text(tags::SERIES_INSTANCE_UID, b"UI", series.unwrap_or(""))
        .text(tags::MODALITY, b"CS", modality.unwrap_or(""))
        .text(tags::SERIES_DESCRIPTION, b"LO", "")
        .text(tags::SERIES_NUMBER, b"IS", "")
        .text(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, b"IS", "")
}

fn series_of(parsed: &Parsed) -> Option<Series> {
    Series::from_attributes(|tag| parsed.text(tag))
}

/// C-FIND at study level, then at series level for each study found.
pub(super) fn find(
    server: &DimseServer,
    query: &Query,
    limits: &Limits,
) -> Result<Vec<Study>, PacsError> {
    let mut session = find_session(server, limits)?;
    let identifier = Elements::new()
        .text(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 192")
        .text(
            tags::STUDY_DATE,
            b"DA",
            query.date_key().as_deref().unwrap_or(""),
        )
        .text(tags::QUERY_RETRIEVE_LEVEL, b"CS", "STUDY")
        .text(
            tags::MODALITIES_IN_STUDY,
            b"CS",
            query.modality.as_deref().unwrap_or(""),
        )
        .text(tags::STUDY_DESCRIPTION, b"LO", "")
        .text(
            tags::PATIENT_NAME,
            b"PN",
            query.name_key().as_deref().unwrap_or(""),
        )
        .text(
            tags::PATIENT_ID,
            b"LO",
            query.patient_id.as_deref().unwrap_or(""),
        )
        .text(tags::STUDY_INSTANCE_UID, b"UI", "");
    let found = c_find(&mut session, identifier)?;
    let mut studies = Vec::new();
    for parsed in found {
        let Some(uid) = parsed
            .text(tags::STUDY_INSTANCE_UID)
            .filter(|u| !u.is_empty())
        else {
            continue;
        };
        let series = c_find(
            &mut session,
            series_identifier(Some(&uid), None, query.modality.as_deref()),
        )?;
        let series: Vec<Series> = series.iter().filter_map(series_of).collect();
        if series.is_empty() {
            continue;
        }
        studies.push(Study::from_attributes(uid, |tag| parsed.text(tag), series));
    }
    session.release();
    Ok(studies)
}

/// The study of a series, by a series-level C-FIND on its UID.
pub(super) fn study_of(
    server: &DimseServer,
    series: &str,
    limits: &Limits,
) -> Result<Option<String>, PacsError> {
    let mut session = find_session(server, limits)?;
    let found = c_find(&mut session, series_identifier(None, Some(series), None))?;
    session.release();
    Ok(found
        .iter()
        .find_map(|p| p.text(tags::STUDY_INSTANCE_UID).filter(|u| !u.is_empty())))
}

/// C-GET of one series into `folder`; returns the number of slices written.
pub(super) fn get_series(
    server: &DimseServer,
    study: &str,
    series: &str,
    folder: &Path,
    limits: &Limits,
    control: &Control<'_>,
) -> Result<usize, PacsError> {
    let mut proposals = vec![Proposal {
        abstract_syntax: GET_STUDY_ROOT,
        transfer_syntaxes: vec![EXPLICIT_LE, IMPLICIT_LE],
    }];
    proposals.extend(STORAGE_SYNTAXES.iter().map(|ts| Proposal {
        abstract_syntax: CT_IMAGE_STORAGE,
        transfer_syntaxes: vec![*ts],
    }));
    let mut session = Session::open(server, limits, &proposals, &[CT_IMAGE_STORAGE])?;
    let (context, syntax) = session.context_for(GET_STUDY_ROOT)?;
    let id = session.message_id();
    let rq = Elements::new()
        .text(command::AFFECTED_SOP_CLASS, b"UI", GET_STUDY_ROOT)
        .u16(command::FIELD, command::C_GET_RQ)
        .u16(command::MESSAGE_ID, id)
        .u16(command::PRIORITY, 0)
        .u16(command::DATA_SET_TYPE, 0x0000);
    let identifier = Elements::new()
        .text(tags::QUERY_RETRIEVE_LEVEL, b"CS", "SERIES")
        .text(tags::STUDY_INSTANCE_UID, b"UI", study)
        .text(tags::SERIES_INSTANCE_UID, b"UI", series);
    session.send(context, rq, Some(identifier.encode(syntax)))?;
    let mut written = 0usize;
    let mut expected = None;
    loop {
        let message = match session.receive(control) {
            Err(PacsError::Cancelled) => {
                session.abort();
                return Err(PacsError::Cancelled);
            }
            other => other?,
        };
        match message.field() {
            Some(command::C_STORE_RQ) => {
                let status = match store_instance(&mut session, &message, folder, written) {
                    Ok(()) => 0x0000,
                    Err(e) => {
                        // Tell the server, then stop: a folder with a hole is no series.
                        let _ = respond_to_store(&mut session, &message, 0xA700);
                        return Err(e);
                    }
                };
                respond_to_store(&mut session, &message, status)?;
                written += 1;
                control.report(written, expected);
            }
            Some(command::C_GET_RSP) => {
                let count = |tag| message.command.u16(tag).map(usize::from);
                match message.status() {
                    Some(0xFF00) => {
                        let parts = [
                            command::REMAINING,
                            command::COMPLETED,
                            command::FAILED,
                            command::WARNING,
                        ];
                        expected = parts
                            .iter()
                            .map(|t| count(*t))
                            .sum::<Option<usize>>()
                            .or(expected);
                        control.report(written, expected);
                    }
                    Some(0x0000) => break,
                    // Warning (some sub-operations failed) or failure with none received: say
                    // what the server says rather than returning a partial series.
                    status => {
                        let failed = count(command::FAILED).unwrap_or(0);
                        if written == 0 && failed > 0 {
                            return Err(PacsError::Empty {
                                server: session.server.clone(),
                                series: series.to_owned(),
                                detail: format!(
                                    "the server failed {failed} sub-operations; ape accepts CT Image Storage only, so the series may not be CT"
                                ),
                            });
                        }
                        return Err(status_error(&session.server, "C-GET", status, &message));
                    }
                }
            }
            other => {
                return Err(PacsError::protocol(
                    &session.server,
                    format!(
                        "unexpected command 0x{:04X} during C-GET",
                        other.unwrap_or(0)
                    ),
                ));
            }
        }
    }
    session.release();
    Ok(written)
}

/// Writes a C-STORE's data set as a Part 10 file (the meta group ours, the data set as sent).
fn store_instance(
    session: &mut Session<'_>,
    message: &Message,
    folder: &Path,
    serial: usize,
) -> Result<(), PacsError> {
    let server = session.server.clone();
    let sop_class = message
        .command
        .text(command::AFFECTED_SOP_CLASS)
        .unwrap_or_default();
    let sop_instance = message
        .command
        .text(command::AFFECTED_SOP_INSTANCE)
        .unwrap_or_default();
    let data = message
        .data
        .as_deref()
        .ok_or_else(|| PacsError::protocol(&server, "a C-STORE without a data set"))?;
    let transfer_syntax = session
        .association()?
        .presentation_contexts()
        .iter()
        .find(|c| c.id == message.context)
        .map(|c| c.transfer_syntax.trim_end_matches('\0').to_owned())
        .ok_or_else(|| {
            PacsError::protocol(
                &server,
                "a C-STORE on a presentation context never accepted",
            )
        })?;
    if sop_class != CT_IMAGE_STORAGE {
        return Err(PacsError::NotCt {
            server,
            series: String::new(),
            what: format!("an instance of SOP class {sop_class}"),
        });
    }
    let bytes = part10(&sop_class, &sop_instance, &transfer_syntax, data);
    let path = folder.join(instance_file_name(&sop_instance, serial));
    std::fs::File::create_new(&path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|e| PacsError::io(&path, e))
}

fn respond_to_store(
    session: &mut Session<'_>,
    message: &Message,
    status: u16,
) -> Result<(), PacsError> {
    let rsp = Elements::new()
        .text(
            command::AFFECTED_SOP_CLASS,
            b"UI",
            &message
                .command
                .text(command::AFFECTED_SOP_CLASS)
                .unwrap_or_default(),
        )
        .u16(command::FIELD, command::C_STORE_RSP)
        .u16(
            command::RESPONDED_TO,
            message.command.u16(command::MESSAGE_ID).unwrap_or(0),
        )
        .u16(command::DATA_SET_TYPE, command::NO_DATA_SET)
        .u16(command::STATUS, status)
        .text(
            command::AFFECTED_SOP_INSTANCE,
            b"UI",
            &message
                .command
                .text(command::AFFECTED_SOP_INSTANCE)
                .unwrap_or_default(),
        );
    session.send(message.context, rsp, None)
}

/// A DICOM file: preamble, `DICM`, the meta group, then the data set bytes unchanged.
fn part10(sop_class: &str, sop_instance: &str, transfer_syntax: &str, data: &[u8]) -> Vec<u8> {
    let meta = Elements::new()
        .bytes((0x0002, 0x0001), b"OB", &[0, 1])
        .text((0x0002, 0x0002), b"UI", sop_class)
        .text((0x0002, 0x0003), b"UI", sop_instance)
        .text((0x0002, 0x0010), b"UI", transfer_syntax)
        .text((0x0002, 0x0012), b"UI", IMPLEMENTATION_CLASS_UID)
        .text((0x0002, 0x0013), b"SH", "APE")
        .encode(Syntax::ExplicitLittle);
    let group_length = Elements::new()
        .u32(
            (0x0002, 0x0000),
            u32::try_from(meta.len()).unwrap_or(u32::MAX),
        )
        .encode(Syntax::ExplicitLittle);
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&group_length);
    out.extend_from_slice(&meta);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn part10_files_carry_their_meta_group() {
        let data = Elements::new()
            .text((0x0008, 0x0016), b"UI", CT_IMAGE_STORAGE)
            .encode(Syntax::ExplicitLittle);
        let file = part10(CT_IMAGE_STORAGE, "1.2.3", EXPLICIT_LE, &data);
        let meta = super::super::store::meta_group(&file).unwrap();
        assert_eq!(
            meta.text((0x0002, 0x0002)).as_deref(),
            Some(CT_IMAGE_STORAGE)
        );
        assert_eq!(meta.text((0x0002, 0x0010)).as_deref(), Some(EXPLICIT_LE));
        assert!(file.ends_with(&data));
    }

    #[test]
    fn a_retrieved_series_that_is_not_ct_is_refused_by_name() {
        use super::super::store::check_ct;
        const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, sop_class: &str| {
            let file = part10(sop_class, "1.2.3", EXPLICIT_LE, &[]);
            std::fs::write(dir.path().join(name), file).unwrap();
        };
        write("a.dcm", CT_IMAGE_STORAGE);
        assert!(check_ct(dir.path(), "PACS@h:1", "1.2").is_ok());
        write("b.dcm", MR_IMAGE_STORAGE);
        let err = check_ct(dir.path(), "PACS@h:1", "1.2").unwrap_err();
        assert!(matches!(err, PacsError::NotCt { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("PACS@h:1")
                && message.contains("not CT")
                && message.contains(MR_IMAGE_STORAGE),
            "{message}"
        );
        std::fs::remove_file(dir.path().join("b.dcm")).unwrap();
        std::fs::write(dir.path().join("c.dcm"), b"not dicom").unwrap();
        let message = check_ct(dir.path(), "PACS@h:1", "1.2")
            .unwrap_err()
            .to_string();
        assert!(message.contains("unreadable file"), "{message}");
    }
}
