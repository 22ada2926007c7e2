//! Program container (version 1): the file `aic-exec` writes (`programqpc.bin`) and the runtime
//! loads. One little-endian file: a 64-byte header, a section table, then sections.
//!
//! ```text
//! header   magic "AICSPRG\0", version, header bytes, file bytes, CRC-32 of every byte
//!          after the header, section count
//! table    section_count x { kind, offset, len }
//! metadata name, batch size, cores, DDR bytes, VTCM bytes per core
//! io       count, then count x binding { name, direction, dtype, shape, DDR offset, bytes }
//! code     core count, instruction count per core, then every core's instructions
//! consts   repeated { DDR offset, len, data padded to 8 }   (optional)
//! layers   layer count, core count, then layer count x core count first-instruction
//!          indices (layer by layer), padded to 8, then per layer { name length u16,
//!          op-type length u16, name, op type } padded to 8       (optional)
//! entries  entry count, core count, then entry count x core count first-instruction
//!          indices, padded to 8, then per entry { name length u16, name } padded
//!          to 8                                                   (optional)
//! ```
//!
//! The layers section names the ONNX node each instruction was compiled from, so
//! profiles and traces can say which layer an instruction belongs to.
//!
//! A program may have several *entries* (network specialisations: a language model's
//! prefill over a prompt and its one-token decode step) sharing one DDR layout: each
//! core's stream is the entries' streams one after the other, each ending in `End`; a
//! binding belongs to one entry; the doorbell's data names the entry a run starts.
//! *State* bindings name DDR the entries share and that outlives a run (a KV cache):
//! the host never moves it.
//!
//! [`ProgramImage::parse`] checks every offset and length before using it and never
//! panics; its errors name the section and the bound that was broken.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

use crate::isa::{Instruction, INSTRUCTION_BYTES};

pub const MAGIC: [u8; 8] = *b"AICSPRG\0";
/// Version 1: 192-byte instructions with tensor operand descriptors (version 0 had
/// 32-byte scalar instructions).
pub const VERSION: u32 = 1;
/// Most I/O bindings a program may have.
pub const MAX_BINDINGS: u32 = 64;
/// Most cores a program may use.
pub const MAX_CORES: u32 = 64;
/// The largest batch size a program may declare.
pub const MAX_BATCH_SIZE: u32 = 1 << 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    version: u32,
    header_bytes: u32,
    file_bytes: u64,
    crc32: u32,
    section_count: u32,
    reserved: [u32; 8],
}
const HEADER_BYTES: usize = size_of::<Header>();
const _: () = assert!(HEADER_BYTES == 64);

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct SectionEntry {
    kind: u32,
    reserved: u32,
    offset: u64,
    len: u64,
}
const _: () = assert!(size_of::<SectionEntry>() == 24);

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct MetadataRecord {
    name: [u8; 64],
    batch_size: u32,
    num_cores: u32,
    ddr_bytes: u64,
    vtcm_bytes: u64,
    reserved: [u64; 2],
}
const _: () = assert!(size_of::<MetadataRecord>() == 104);

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct BindingRecord {
    name: [u8; 48],
    direction: u8,
    dtype: u8,
    rank: u8,
    reserved0: u8,
    reserved1: u32,
    shape: [u32; 6],
    ddr_offset: u64,
    size_bytes: u64,
    host_dtype: u8,
    host_layout: u8,
    reserved2: u16,
    /// f32 bits.
    quant_scale: u32,
    quant_offset: i32,
    reserved3: u32,
}
const _: () = assert!(size_of::<BindingRecord>() == 112);

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct ConstantRecord {
    ddr_offset: u64,
    len: u64,
}

const KIND_METADATA: u32 = 1;
const KIND_IO: u32 = 2;
const KIND_CODE: u32 = 3;
const KIND_CONSTANTS: u32 = 4;
const KIND_LAYERS: u32 = 5;
const KIND_ENTRIES: u32 = 6;

/// Most layers a program may name.
pub const MAX_LAYERS: u32 = 1 << 20;

fn section_name(kind: u32) -> &'static str {
    match kind {
        KIND_METADATA => "metadata",
        KIND_IO => "io",
        KIND_CODE => "code",
        KIND_CONSTANTS => "constants",
        KIND_LAYERS => "layers",
        KIND_ENTRIES => "entries",
        _ => "unknown",
    }
}

/// Whether a binding feeds the program or is produced by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    Input = 0,
    Output = 1,
    /// Retained state: DDR the program keeps between runs, which no transfer touches.
    State = 2,
}

/// Element type of an I/O binding, as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDType {
    F32 = 0,
    F16 = 1,
    I8 = 2,
    U8 = 3,
    I32 = 4,
    I64 = 5,
}

impl IoDType {
    pub fn from_raw(raw: u8) -> Option<IoDType> {
        Some(match raw {
            0 => IoDType::F32,
            1 => IoDType::F16,
            2 => IoDType::I8,
            3 => IoDType::U8,
            4 => IoDType::I32,
            5 => IoDType::I64,
            _ => return None,
        })
    }

    pub fn bytes(self) -> u64 {
        match self {
            IoDType::F32 | IoDType::I32 => 4,
            IoDType::F16 => 2,
            IoDType::I8 | IoDType::U8 => 1,
            IoDType::I64 => 8,
        }
    }
}

/// How a rank-4 tensor is laid out on the host relative to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostLayout {
    /// The same layout as on the device.
    Same = 0,
    /// The host uses NCHW, the device NHWC.
    NchwOnHostNhwcOnDevice = 1,
    /// The host uses NHWC, the device NCHW.
    NhwcOnHostNchwOnDevice = 2,
}

/// The format the application provides (inputs) or receives (outputs); the runtime
/// converts between it and the device format in pre- and post-processing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostFormat {
    pub dtype: IoDType,
    pub layout: HostLayout,
    /// Quantisation between a float host and an int8/uint8 device:
    /// `q = round(x / scale) + offset`, `x = (q - offset) * scale`.
    pub scale: f32,
    pub offset: i32,
}

/// One named input or output of a program and where it lives in the activation's DDR.
#[derive(Clone, Debug, PartialEq)]
pub struct IoBinding {
    pub name: String,
    pub direction: IoDirection,
    /// Device dtype and shape.
    pub dtype: IoDType,
    pub shape: Vec<u32>,
    pub ddr_offset: u64,
    pub size_bytes: u64,
    pub host: HostFormat,
    /// The entry the binding belongs to (0 for state).
    pub entry: u8,
}

impl IoBinding {
    /// A binding whose host format is the device format.
    pub fn new(name: &str, direction: IoDirection, dtype: IoDType, shape: &[u32], ddr_offset: u64) -> IoBinding {
        let elements: u64 = shape.iter().map(|&d| u64::from(d)).product();
        IoBinding {
            name: name.into(),
            direction,
            dtype,
            shape: shape.to_vec(),
            ddr_offset,
            size_bytes: elements * dtype.bytes(),
            host: HostFormat { dtype, layout: HostLayout::Same, scale: 1.0, offset: 0 },
            entry: 0,
        }
    }

    /// The same binding, of entry `entry`.
    pub fn in_entry(mut self, entry: u8) -> IoBinding {
        self.entry = entry;
        self
    }

    /// The same binding with a different host format.
    pub fn with_host(mut self, host: HostFormat) -> IoBinding {
        self.host = host;
        self
    }

    /// Elements of the shape (`u64::MAX` if more; a parsed container's never are).
    pub fn elements(&self) -> u64 {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(u64::from(d))).unwrap_or(u64::MAX)
    }

    /// Bytes of the tensor in its host format.
    pub fn host_size_bytes(&self) -> u64 {
        self.elements().saturating_mul(self.host.dtype.bytes())
    }

    /// Whether pre/post-processing has work to do for this binding.
    pub fn converts(&self) -> bool {
        self.host.dtype != self.dtype || self.host.layout != HostLayout::Same
    }
}

/// Bytes the device copies into the activation's DDR when it is activated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstantBlob {
    pub ddr_offset: u64,
    pub data: Vec<u8>,
}

/// A parsed (or to-be-written) program.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramImage {
    pub name: String,
    pub batch_size: u32,
    /// DDR the program needs per activation.
    pub ddr_bytes: u64,
    /// VTCM the program uses on each of its cores.
    pub vtcm_bytes: u64,
    pub bindings: Vec<IoBinding>,
    /// One instruction stream per core; the number of streams is the core count.
    pub cores: Vec<Vec<Instruction>>,
    pub constants: Vec<ConstantBlob>,
    /// The ONNX nodes the program was compiled from, in order (empty if unknown).
    pub layers: Vec<Layer>,
    /// The program's entries (empty: one, the whole of every stream).
    pub entries: Vec<Entry>,
}

/// One entry of a program: where its instructions start in each core's stream (they
/// run to the next entry's start, the last entry's to the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub starts: Vec<u32>,
}

/// Most entries a program may have.
pub const MAX_ENTRIES: u32 = 16;

/// One ONNX node a program was compiled from, and where its instructions start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub op_type: String,
    /// Per core, the index of the layer's first instruction; its instructions run to
    /// the next layer's start (the last layer's to the end of the stream).
    pub starts: Vec<u32>,
}

/// What is wrong with a container.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error("file is {len} bytes, shorter than the {need}-byte header")]
    TooShort { len: usize, need: usize },
    #[error("bad magic {found:02x?}: not an aicsim program container")]
    BadMagic { found: [u8; 8] },
    #[error("container version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("header says {field} is {value}, expected {expected}")]
    BadHeader { field: &'static str, value: u64, expected: u64 },
    #[error("header says the file is {header_says} bytes but it is {actual} bytes (truncated or padded)")]
    LengthMismatch { header_says: u64, actual: u64 },
    #[error("checksum mismatch: header has {stored:#010x}, contents give {computed:#010x} (file corrupted)")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("section table of {count} entries ends at byte {end}, past the end of the {file_len}-byte file")]
    TableOutOfBounds { count: u32, end: u64, file_len: u64 },
    #[error(
        "section {index} ({section}) spans [{offset}, {offset} + {len}), past the end of the {file_len}-byte file"
    )]
    SectionOutOfBounds { index: usize, section: &'static str, offset: u64, len: u64, file_len: u64 },
    #[error("section {index} has unknown kind {kind}")]
    UnknownSection { index: usize, kind: u32 },
    #[error("{0} section is missing")]
    MissingSection(&'static str),
    #[error("{0} section appears more than once")]
    DuplicateSection(&'static str),
    #[error("{section} section: {what} needs {need} bytes at offset {offset} but the section has {available}")]
    Truncated { section: &'static str, what: &'static str, offset: u64, need: u64, available: u64 },
    #[error("{section} section: {what} is {value}, {bound}")]
    OutOfRange { section: &'static str, what: &'static str, value: u64, bound: &'static str },
    #[error("{section} section: {what} is not valid: {reason}")]
    Invalid { section: &'static str, what: String, reason: &'static str },
    #[error("io binding '{name}' spans DDR [{start}, {end}) but the program's DDR allocation is {ddr_bytes} bytes")]
    BindingOutsideDdr { name: String, start: u64, end: u64, ddr_bytes: u64 },
    #[error("constant {index} spans DDR [{start}, {end}) but the program's DDR allocation is {ddr_bytes} bytes")]
    ConstantOutsideDdr { index: usize, start: u64, end: u64, ddr_bytes: u64 },
}

/// Reads Pod records out of one section with bounds checks.
struct Cursor<'a> {
    section: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, what: &'static str, len: usize) -> Result<&'a [u8], ContainerError> {
        let end = self.at.checked_add(len).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(ContainerError::Truncated {
                section: self.section,
                what,
                offset: self.at as u64,
                need: len as u64,
                available: (self.bytes.len() - self.at) as u64,
            });
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn record<T: Pod>(&mut self, what: &'static str) -> Result<T, ContainerError> {
        Ok(bytemuck::pod_read_unaligned(self.take(what, size_of::<T>())?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ContainerError> {
        self.record::<u32>(what)
    }

    fn align8(&mut self) {
        self.at = self.at.div_ceil(8) * 8;
        self.at = self.at.min(self.bytes.len());
    }
}

fn fixed_str(section: &'static str, bytes: &[u8]) -> Result<String, ContainerError> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    if bytes[end..].iter().any(|&b| b != 0) {
        return Err(ContainerError::Invalid {
            section,
            what: "name".into(),
            reason: "bytes after the terminating NUL",
        });
    }
    core::str::from_utf8(&bytes[..end]).map(String::from).map_err(|_| ContainerError::Invalid {
        section,
        what: "name".into(),
        reason: "not UTF-8",
    })
}

fn range_ok(start: u64, len: u64, size: u64) -> Option<u64> {
    start.checked_add(len).filter(|&end| end <= size)
}

impl ProgramImage {
    /// Number of cores the program runs on.
    pub fn num_cores(&self) -> u32 {
        self.cores.len() as u32
    }

    /// The first entry's inputs.
    pub fn inputs(&self) -> impl Iterator<Item = &IoBinding> {
        self.entry_inputs(0)
    }

    /// The first entry's outputs.
    pub fn outputs(&self) -> impl Iterator<Item = &IoBinding> {
        self.entry_outputs(0)
    }

    pub fn entry_inputs(&self, entry: usize) -> impl Iterator<Item = &IoBinding> {
        self.bindings.iter().filter(move |b| b.direction == IoDirection::Input && usize::from(b.entry) == entry)
    }

    pub fn entry_outputs(&self, entry: usize) -> impl Iterator<Item = &IoBinding> {
        self.bindings.iter().filter(move |b| b.direction == IoDirection::Output && usize::from(b.entry) == entry)
    }

    /// The retained-state bindings.
    pub fn state(&self) -> impl Iterator<Item = &IoBinding> {
        self.bindings.iter().filter(|b| b.direction == IoDirection::State)
    }

    /// How many entries the program has (at least 1).
    pub fn entry_count(&self) -> usize {
        self.entries.len().max(1)
    }

    /// The name of entry `entry` ("main" for a program of one).
    pub fn entry_name(&self, entry: usize) -> &str {
        self.entries.get(entry).map_or("main", |e| e.name.as_str())
    }

    /// The index of the entry called `name`.
    pub fn entry_index(&self, name: &str) -> Option<usize> {
        (0..self.entry_count()).find(|&e| self.entry_name(e) == name)
    }

    /// The instructions of `entry` on `core` (empty if either is out of range).
    pub fn entry_stream(&self, entry: usize, core: usize) -> &[Instruction] {
        let Some(stream) = self.cores.get(core) else { return &[] };
        if self.entries.is_empty() {
            return if entry == 0 { stream } else { &[] };
        }
        let start = |e: usize| self.entries.get(e).map(|x| x.starts[core] as usize);
        match start(entry) {
            Some(s) => &stream[s..start(entry + 1).unwrap_or(stream.len())],
            None => &[],
        }
    }

    /// Parses and validates a container.
    pub fn parse(bytes: &[u8]) -> Result<ProgramImage, ContainerError> {
        let header = check_header(bytes)?;
        let sections = Sections::find(bytes, &header)?;
        let (meta, name) = parse_metadata(sections.metadata)?;
        let bindings = parse_bindings(sections.io, meta.ddr_bytes)?;
        let cores = parse_code(sections.code, meta.num_cores)?;
        let constants = parse_constants(&sections.constants, meta.ddr_bytes)?;
        let layers = match sections.layers {
            Some(body) => parse_layers(body, &cores)?,
            None => Vec::new(),
        };
        let entries = match sections.entries {
            Some(body) => parse_entries(body, &cores)?,
            None => Vec::new(),
        };
        if let Some(b) = bindings.iter().find(|b| usize::from(b.entry) >= entries.len().max(1)) {
            return Err(ContainerError::Invalid {
                section: "io",
                what: b.name.clone(),
                reason: "belongs to an entry the program does not have",
            });
        }
        for e in 0..entries.len().max(1) {
            if !bindings.iter().any(|b| b.direction == IoDirection::Output && usize::from(b.entry) == e) {
                return Err(ContainerError::Invalid {
                    section: "io",
                    what: format!("entry {e}"),
                    reason: "has no output",
                });
            }
        }
        Ok(ProgramImage {
            name,
            batch_size: meta.batch_size,
            ddr_bytes: meta.ddr_bytes,
            vtcm_bytes: meta.vtcm_bytes,
            bindings,
            cores,
            constants,
            layers,
            entries,
        })
    }

    /// The index in [`ProgramImage::layers`] of the layer instruction `index` of
    /// `core`'s stream belongs to, if the program names its layers.
    pub fn layer_index(&self, core: usize, index: u32) -> Option<usize> {
        self.layers.partition_point(|l| l.starts.get(core).is_some_and(|&s| s <= index)).checked_sub(1)
    }

    /// The layer instruction `index` of `core`'s stream belongs to.
    pub fn layer_of(&self, core: usize, index: u32) -> Option<&Layer> {
        self.layer_index(core, index).map(|i| &self.layers[i])
    }

    /// Serialises the image into container bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();

        let mut meta = MetadataRecord::zeroed();
        copy_name(&mut meta.name, &self.name);
        meta.batch_size = self.batch_size;
        meta.num_cores = self.num_cores();
        meta.ddr_bytes = self.ddr_bytes;
        meta.vtcm_bytes = self.vtcm_bytes;
        sections.push((KIND_METADATA, bytemuck::bytes_of(&meta).to_vec()));

        let mut io = Vec::new();
        io.extend_from_slice(&(self.bindings.len() as u32).to_le_bytes());
        io.extend_from_slice(&0u32.to_le_bytes());
        for b in &self.bindings {
            let mut rec = BindingRecord::zeroed();
            copy_name(&mut rec.name, &b.name);
            rec.direction = b.direction as u8;
            rec.dtype = b.dtype as u8;
            rec.rank = b.shape.len() as u8;
            for (dst, &d) in rec.shape.iter_mut().zip(&b.shape) {
                *dst = d;
            }
            rec.ddr_offset = b.ddr_offset;
            rec.size_bytes = b.size_bytes;
            rec.host_dtype = b.host.dtype as u8;
            rec.host_layout = b.host.layout as u8;
            rec.quant_scale = b.host.scale.to_bits();
            rec.quant_offset = b.host.offset;
            rec.reserved0 = b.entry;
            io.extend_from_slice(bytemuck::bytes_of(&rec));
        }
        sections.push((KIND_IO, io));

        let mut code = Vec::new();
        code.extend_from_slice(&self.num_cores().to_le_bytes());
        code.extend_from_slice(&0u32.to_le_bytes());
        for stream in &self.cores {
            code.extend_from_slice(&(stream.len() as u32).to_le_bytes());
        }
        pad8(&mut code);
        for stream in &self.cores {
            code.extend_from_slice(bytemuck::cast_slice(stream));
        }
        sections.push((KIND_CODE, code));

        if !self.constants.is_empty() {
            let mut consts = Vec::new();
            for c in &self.constants {
                let rec = ConstantRecord { ddr_offset: c.ddr_offset, len: c.data.len() as u64 };
                consts.extend_from_slice(bytemuck::bytes_of(&rec));
                consts.extend_from_slice(&c.data);
                pad8(&mut consts);
            }
            sections.push((KIND_CONSTANTS, consts));
        }

        if !self.layers.is_empty() {
            let mut layers = Vec::new();
            layers.extend_from_slice(&(self.layers.len() as u32).to_le_bytes());
            layers.extend_from_slice(&self.num_cores().to_le_bytes());
            for l in &self.layers {
                for core in 0..self.cores.len() {
                    layers.extend_from_slice(&l.starts.get(core).copied().unwrap_or(0).to_le_bytes());
                }
            }
            pad8(&mut layers);
            for l in &self.layers {
                let (name, op) = (short_str(&l.name), short_str(&l.op_type));
                layers.extend_from_slice(&(name.len() as u16).to_le_bytes());
                layers.extend_from_slice(&(op.len() as u16).to_le_bytes());
                layers.extend_from_slice(name.as_bytes());
                layers.extend_from_slice(op.as_bytes());
            }
            pad8(&mut layers);
            sections.push((KIND_LAYERS, layers));
        }

        if !self.entries.is_empty() {
            let mut entries = Vec::new();
            entries.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
            entries.extend_from_slice(&self.num_cores().to_le_bytes());
            for e in &self.entries {
                for core in 0..self.cores.len() {
                    entries.extend_from_slice(&e.starts.get(core).copied().unwrap_or(0).to_le_bytes());
                }
            }
            pad8(&mut entries);
            for e in &self.entries {
                let name = short_str(&e.name);
                entries.extend_from_slice(&(name.len() as u16).to_le_bytes());
                entries.extend_from_slice(name.as_bytes());
            }
            pad8(&mut entries);
            sections.push((KIND_ENTRIES, entries));
        }

        let table_bytes = sections.len() * size_of::<SectionEntry>();
        let mut out = alloc::vec![0u8; HEADER_BYTES + table_bytes];
        let mut entries = Vec::new();
        for (kind, body) in &sections {
            pad8(&mut out);
            entries.push(SectionEntry { kind: *kind, reserved: 0, offset: out.len() as u64, len: body.len() as u64 });
            out.extend_from_slice(body);
        }
        out[HEADER_BYTES..HEADER_BYTES + table_bytes].copy_from_slice(bytemuck::cast_slice(&entries));
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            header_bytes: HEADER_BYTES as u32,
            file_bytes: out.len() as u64,
            crc32: crc32fast::hash(&out[HEADER_BYTES..]),
            section_count: sections.len() as u32,
            reserved: [0; 8],
        };
        out[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
        out
    }
}

/// `s` cut to at most `u16::MAX` bytes, at a character boundary.
fn short_str(s: &str) -> &str {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Recomputes the checksum of container bytes (after a deliberate edit, e.g. in tests
/// that exercise the structural checks behind the checksum). Leaves too-short input alone.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= HEADER_BYTES {
        let crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    }
}

fn copy_name(dst: &mut [u8], name: &str) {
    let n = name.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&name.as_bytes()[..n]);
}

fn pad8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

/// The fixed header, checked: magic, version, sizes, reserved words, length, checksum.
fn check_header(bytes: &[u8]) -> Result<Header, ContainerError> {
    if bytes.len() < HEADER_BYTES {
        return Err(ContainerError::TooShort { len: bytes.len(), need: HEADER_BYTES });
    }
    let header: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES]);
    if header.magic != MAGIC {
        return Err(ContainerError::BadMagic { found: header.magic });
    }
    if header.version != VERSION {
        return Err(ContainerError::UnsupportedVersion { found: header.version, supported: VERSION });
    }
    if header.header_bytes as usize != HEADER_BYTES {
        return Err(ContainerError::BadHeader {
            field: "header_bytes",
            value: header.header_bytes.into(),
            expected: HEADER_BYTES as u64,
        });
    }
    if header.reserved != [0; 8] {
        return Err(ContainerError::BadHeader {
            field: "reserved",
            value: header.reserved.iter().map(|&w| u64::from(w)).sum(),
            expected: 0,
        });
    }
    let file_len = bytes.len() as u64;
    if header.file_bytes != file_len {
        return Err(ContainerError::LengthMismatch { header_says: header.file_bytes, actual: file_len });
    }
    let computed = crc32fast::hash(&bytes[HEADER_BYTES..]);
    if computed != header.crc32 {
        return Err(ContainerError::ChecksumMismatch { stored: header.crc32, computed });
    }
    Ok(header)
}

/// The sections a container holds, each found once (constants may come in several).
struct Sections<'a> {
    metadata: &'a [u8],
    io: &'a [u8],
    code: &'a [u8],
    constants: Vec<&'a [u8]>,
    layers: Option<&'a [u8]>,
    entries: Option<&'a [u8]>,
}

impl<'a> Sections<'a> {
    /// Reads the section table: every entry inside the file and past the table.
    fn find(bytes: &'a [u8], header: &Header) -> Result<Sections<'a>, ContainerError> {
        let file_len = bytes.len() as u64;
        let table_end = HEADER_BYTES as u64 + u64::from(header.section_count) * size_of::<SectionEntry>() as u64;
        if table_end > file_len {
            return Err(ContainerError::TableOutOfBounds { count: header.section_count, end: table_end, file_len });
        }
        let mut metadata = None;
        let mut io = None;
        let mut code = None;
        let mut constants: Vec<&[u8]> = Vec::new();
        let mut layers = None;
        let mut entries = None;
        for index in 0..header.section_count as usize {
            let at = HEADER_BYTES + index * size_of::<SectionEntry>();
            let entry: SectionEntry = bytemuck::pod_read_unaligned(&bytes[at..at + size_of::<SectionEntry>()]);
            let section = section_name(entry.kind);
            if entry.reserved != 0 {
                return Err(ContainerError::Invalid {
                    section,
                    what: format!("section table entry {index}"),
                    reason: "reserved field is nonzero",
                });
            }
            let Some(end) = range_ok(entry.offset, entry.len, file_len).filter(|_| entry.offset >= table_end) else {
                return Err(ContainerError::SectionOutOfBounds {
                    index,
                    section,
                    offset: entry.offset,
                    len: entry.len,
                    file_len,
                });
            };
            let body = &bytes[entry.offset as usize..end as usize];
            let slot = match entry.kind {
                KIND_METADATA => &mut metadata,
                KIND_IO => &mut io,
                KIND_CODE => &mut code,
                KIND_LAYERS => &mut layers,
                KIND_ENTRIES => &mut entries,
                KIND_CONSTANTS => {
                    constants.push(body);
                    continue;
                }
                kind => return Err(ContainerError::UnknownSection { index, kind }),
            };
            if slot.replace(body).is_some() {
                return Err(ContainerError::DuplicateSection(section));
            }
        }
        Ok(Sections {
            metadata: metadata.ok_or(ContainerError::MissingSection("metadata"))?,
            io: io.ok_or(ContainerError::MissingSection("io"))?,
            code: code.ok_or(ContainerError::MissingSection("code"))?,
            constants,
            layers,
            entries,
        })
    }
}

/// The metadata record and the program's name.
fn parse_metadata(body: &[u8]) -> Result<(MetadataRecord, String), ContainerError> {
    let mut cur = Cursor { section: "metadata", bytes: body, at: 0 };
    let meta: MetadataRecord = cur.record("metadata record")?;
    let name = fixed_str("metadata", &meta.name)?;
    if meta.reserved != [0; 2] {
        return Err(ContainerError::Invalid {
            section: "metadata",
            what: "metadata record".into(),
            reason: "reserved field is nonzero",
        });
    }
    if meta.batch_size == 0 || meta.batch_size > MAX_BATCH_SIZE {
        return Err(ContainerError::OutOfRange {
            section: "metadata",
            what: "batch size",
            value: meta.batch_size.into(),
            bound: "must be 1 to 65536",
        });
    }
    Ok((meta, name))
}

/// The io section: every binding, and at least one output.
fn parse_bindings(body: &[u8], ddr_bytes: u64) -> Result<Vec<IoBinding>, ContainerError> {
    let mut cur = Cursor { section: "io", bytes: body, at: 0 };
    let count = cur.u32("binding count")?;
    if count > MAX_BINDINGS {
        return Err(ContainerError::OutOfRange {
            section: "io",
            what: "binding count",
            value: count.into(),
            bound: "more than 64",
        });
    }
    cur.u32("padding")?;
    let mut bindings = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let rec: BindingRecord = cur.record("binding record")?;
        bindings.push(parse_binding(&rec, ddr_bytes)?);
    }
    if !bindings.iter().any(|b| b.direction == IoDirection::Output) {
        return Err(ContainerError::Invalid {
            section: "io",
            what: "bindings".into(),
            reason: "the program has no output",
        });
    }
    Ok(bindings)
}

/// One binding record, every field checked (its DDR range against the program's DDR).
fn parse_binding(rec: &BindingRecord, ddr_bytes: u64) -> Result<IoBinding, ContainerError> {
    let name = fixed_str("io", &rec.name)?;
    if rec.reserved1 != 0 || rec.shape[usize::from(rec.rank).min(6)..].iter().any(|&d| d != 0) {
        return Err(ContainerError::Invalid {
            section: "io",
            what: name,
            reason: "reserved field or unused shape dimension is nonzero",
        });
    }
    let direction = match rec.direction {
        0 => IoDirection::Input,
        1 => IoDirection::Output,
        2 => IoDirection::State,
        _ => {
            return Err(ContainerError::Invalid {
                section: "io",
                what: name,
                reason: "direction is neither input, output nor state",
            })
        }
    };
    if direction == IoDirection::State && rec.reserved0 != 0 {
        return Err(ContainerError::Invalid { section: "io", what: name, reason: "state belongs to no entry" });
    }
    let Some(dtype) = IoDType::from_raw(rec.dtype) else {
        return Err(ContainerError::Invalid { section: "io", what: name, reason: "unknown dtype" });
    };
    if rec.rank as usize > rec.shape.len() {
        return Err(ContainerError::Invalid { section: "io", what: name, reason: "rank above 6" });
    }
    let shape = rec.shape[..rec.rank as usize].to_vec();
    let elements = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)));
    if elements.and_then(|e| e.checked_mul(dtype.bytes())) != Some(rec.size_bytes) || rec.size_bytes == 0 {
        return Err(ContainerError::Invalid {
            section: "io",
            what: name,
            reason: "size_bytes does not equal the shape's element count times the dtype size, or is zero",
        });
    }
    if range_ok(rec.ddr_offset, rec.size_bytes, ddr_bytes).is_none() {
        return Err(ContainerError::BindingOutsideDdr {
            name,
            start: rec.ddr_offset,
            end: rec.ddr_offset.saturating_add(rec.size_bytes),
            ddr_bytes,
        });
    }
    let Some(host_dtype) = IoDType::from_raw(rec.host_dtype) else {
        return Err(ContainerError::Invalid { section: "io", what: name, reason: "unknown host dtype" });
    };
    let layout = match rec.host_layout {
        0 => HostLayout::Same,
        1 => HostLayout::NchwOnHostNhwcOnDevice,
        2 => HostLayout::NhwcOnHostNchwOnDevice,
        _ => return Err(ContainerError::Invalid { section: "io", what: name, reason: "unknown host layout" }),
    };
    if layout != HostLayout::Same && rec.rank != 4 {
        return Err(ContainerError::Invalid {
            section: "io",
            what: name,
            reason: "a layout change needs a rank-4 tensor",
        });
    }
    let scale = f32::from_bits(rec.quant_scale);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(ContainerError::Invalid {
            section: "io",
            what: name,
            reason: "quantisation scale is not a positive finite number",
        });
    }
    if rec.reserved2 != 0 || rec.reserved3 != 0 {
        return Err(ContainerError::Invalid { section: "io", what: name, reason: "reserved field is nonzero" });
    }
    let host = HostFormat { dtype: host_dtype, layout, scale, offset: rec.quant_offset };
    Ok(IoBinding {
        host,
        name,
        direction,
        dtype,
        shape,
        ddr_offset: rec.ddr_offset,
        size_bytes: rec.size_bytes,
        entry: rec.reserved0,
    })
}

/// The code section: one instruction stream per core, as many as the metadata says.
fn parse_code(body: &[u8], meta_cores: u32) -> Result<Vec<Vec<Instruction>>, ContainerError> {
    let mut cur = Cursor { section: "code", bytes: body, at: 0 };
    let num_cores = cur.u32("core count")?;
    if num_cores == 0 || num_cores > MAX_CORES || num_cores != meta_cores {
        return Err(ContainerError::OutOfRange {
            section: "code",
            what: "core count",
            value: num_cores.into(),
            bound: "must be 1..=64 and equal the metadata's core count",
        });
    }
    cur.u32("padding")?;
    let mut counts = Vec::with_capacity(num_cores as usize);
    for _ in 0..num_cores {
        counts.push(cur.u32("instruction count")?);
    }
    cur.align8();
    let mut cores = Vec::with_capacity(num_cores as usize);
    for &n in &counts {
        let len = (n as usize).checked_mul(INSTRUCTION_BYTES).ok_or(ContainerError::OutOfRange {
            section: "code",
            what: "instruction count",
            value: n.into(),
            bound: "overflows",
        })?;
        let raw = cur.take("instruction stream", len)?;
        cores.push(raw.chunks_exact(INSTRUCTION_BYTES).map(bytemuck::pod_read_unaligned).collect());
    }
    Ok(cores)
}

/// The layers section: every start inside its core's stream and no earlier than the
/// previous layer's, every name UTF-8.
fn parse_layers(body: &[u8], cores: &[Vec<Instruction>]) -> Result<Vec<Layer>, ContainerError> {
    let mut cur = Cursor { section: "layers", bytes: body, at: 0 };
    let count = cur.u32("layer count")?;
    if count > MAX_LAYERS {
        return Err(ContainerError::OutOfRange {
            section: "layers",
            what: "layer count",
            value: count.into(),
            bound: "more than 1048576",
        });
    }
    let num_cores = cur.u32("core count")?;
    if num_cores as usize != cores.len() {
        return Err(ContainerError::OutOfRange {
            section: "layers",
            what: "core count",
            value: num_cores.into(),
            bound: "must equal the code section's core count",
        });
    }
    let mut layers: Vec<Layer> = Vec::new();
    for index in 0..count as usize {
        let mut starts = Vec::with_capacity(cores.len());
        for (core, stream) in cores.iter().enumerate() {
            let start = cur.u32("layer start")?;
            let previous = layers.last().map_or(0, |l| l.starts[core]);
            if start as usize > stream.len() || start < previous {
                return Err(ContainerError::Invalid {
                    section: "layers",
                    what: format!("layer {index}'s start {start} on core {core}"),
                    reason: "is past the core's stream or before the previous layer's start",
                });
            }
            starts.push(start);
        }
        layers.push(Layer { name: String::new(), op_type: String::new(), starts });
    }
    cur.align8();
    for (index, layer) in layers.iter_mut().enumerate() {
        let name_len = u16::from_le_bytes(cur.take("name length", 2)?.try_into().expect("2 bytes"));
        let op_len = u16::from_le_bytes(cur.take("op-type length", 2)?.try_into().expect("2 bytes"));
        let text = |bytes: &[u8]| {
            core::str::from_utf8(bytes).map(String::from).map_err(|_| ContainerError::Invalid {
                section: "layers",
                what: format!("layer {index}'s name or op type"),
                reason: "is not UTF-8",
            })
        };
        layer.name = text(cur.take("layer name", name_len.into())?)?;
        layer.op_type = text(cur.take("layer op type", op_len.into())?)?;
    }
    Ok(layers)
}

/// The entries section: at least one entry, the first starting every stream, each
/// starting past the previous one's start and inside its stream, names UTF-8.
fn parse_entries(body: &[u8], cores: &[Vec<Instruction>]) -> Result<Vec<Entry>, ContainerError> {
    let mut cur = Cursor { section: "entries", bytes: body, at: 0 };
    let count = cur.u32("entry count")?;
    if count == 0 || count > MAX_ENTRIES {
        return Err(ContainerError::OutOfRange {
            section: "entries",
            what: "entry count",
            value: count.into(),
            bound: "must be 1 to 16",
        });
    }
    let num_cores = cur.u32("core count")?;
    if num_cores as usize != cores.len() {
        return Err(ContainerError::OutOfRange {
            section: "entries",
            what: "core count",
            value: num_cores.into(),
            bound: "must equal the code section's core count",
        });
    }
    let mut entries: Vec<Entry> = Vec::new();
    for index in 0..count as usize {
        let mut starts = Vec::with_capacity(cores.len());
        for (core, stream) in cores.iter().enumerate() {
            let start = cur.u32("entry start")?;
            let ok = match entries.last() {
                None => start == 0,
                Some(prev) => start > prev.starts[core] && (start as usize) < stream.len(),
            };
            if !ok {
                return Err(ContainerError::Invalid {
                    section: "entries",
                    what: format!("entry {index}'s start {start} on core {core}"),
                    reason: "the first entry starts at 0; each next one inside the stream, after the previous one",
                });
            }
            starts.push(start);
        }
        entries.push(Entry { name: String::new(), starts });
    }
    cur.align8();
    for (index, entry) in entries.iter_mut().enumerate() {
        let len = u16::from_le_bytes(cur.take("name length", 2)?.try_into().expect("2 bytes"));
        entry.name = core::str::from_utf8(cur.take("entry name", len.into())?).map(String::from).map_err(|_| {
            ContainerError::Invalid {
                section: "entries",
                what: format!("entry {index}'s name"),
                reason: "is not UTF-8",
            }
        })?;
    }
    Ok(entries)
}

/// The constant blobs of every constants section, each inside the program's DDR.
fn parse_constants(bodies: &[&[u8]], ddr_bytes: u64) -> Result<Vec<ConstantBlob>, ContainerError> {
    let mut blobs = Vec::new();
    for &body in bodies {
        let mut cur = Cursor { section: "constants", bytes: body, at: 0 };
        while cur.at < body.len() {
            let rec: ConstantRecord = cur.record("constant record")?;
            let len = usize::try_from(rec.len).unwrap_or(usize::MAX);
            let data = cur.take("constant data", len)?;
            let index = blobs.len();
            if range_ok(rec.ddr_offset, rec.len, ddr_bytes).is_none() {
                return Err(ContainerError::ConstantOutsideDdr {
                    index,
                    start: rec.ddr_offset,
                    end: rec.ddr_offset.saturating_add(rec.len),
                    ddr_bytes,
                });
            }
            blobs.push(ConstantBlob { ddr_offset: rec.ddr_offset, data: data.to_vec() });
            cur.align8();
        }
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Op;
    use alloc::vec;

    pub(crate) fn sample() -> ProgramImage {
        ProgramImage {
            name: "sample".into(),
            batch_size: 1,
            ddr_bytes: 4096,
            vtcm_bytes: 1024,
            bindings: vec![
                IoBinding::new("x", IoDirection::Input, IoDType::F32, &[2, 8], 0),
                IoBinding::new("y", IoDirection::Output, IoDType::F32, &[16], 64),
            ],
            cores: vec![vec![
                Instruction::encode(Op::DmaIn {
                    dst: crate::isa::Tensor::vtcm(0, crate::isa::DType::U8, &[64]),
                    src: crate::isa::Tensor::ddr(0, crate::isa::DType::U8, &[64]),
                    multicast: 0,
                    peer_bytes: 0,
                }),
                Instruction::encode(Op::End),
            ]],
            constants: vec![ConstantBlob { ddr_offset: 128, data: vec![1, 2, 3] }],
            layers: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// A program of two entries sharing a state buffer.
    fn two_entries() -> ProgramImage {
        let mut img = sample();
        let end = Instruction::encode(Op::End);
        img.cores[0].push(end);
        img.entries =
            vec![Entry { name: "prefill".into(), starts: vec![0] }, Entry { name: "decode".into(), starts: vec![2] }];
        img.bindings.push(IoBinding::new("x1", IoDirection::Input, IoDType::F32, &[4], 256).in_entry(1));
        img.bindings.push(IoBinding::new("y1", IoDirection::Output, IoDType::F32, &[4], 512).in_entry(1));
        img.bindings.push(IoBinding::new("cache", IoDirection::State, IoDType::F16, &[64], 1024));
        img
    }

    #[test]
    fn entries_and_state_roundtrip_and_split_the_streams() {
        let img = two_entries();
        let back = ProgramImage::parse(&img.to_bytes()).unwrap();
        assert_eq!(back, img);
        assert_eq!(back.entry_count(), 2);
        assert_eq!(back.entry_index("decode"), Some(1));
        assert_eq!(back.entry_stream(0, 0).len(), 2);
        assert_eq!(back.entry_stream(1, 0), &[Instruction::encode(Op::End)]);
        assert_eq!(back.entry_inputs(1).map(|b| b.name.as_str()).collect::<Vec<_>>(), ["x1"]);
        assert_eq!(back.inputs().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["x"]);
        assert_eq!(back.state().count(), 1);
        assert_eq!(sample().entry_count(), 1);
        assert_eq!(sample().entry_stream(0, 0).len(), 2);
    }

    #[test]
    fn bad_entries_are_refused_with_what_is_wrong() {
        let mut img = two_entries();
        img.entries[1].starts = vec![3];
        let e = ProgramImage::parse(&img.to_bytes()).unwrap_err().to_string();
        assert!(e.contains("entry 1's start 3 on core 0"), "{e}");
        let mut img = two_entries();
        img.bindings[2].entry = 2;
        let e = ProgramImage::parse(&img.to_bytes()).unwrap_err().to_string();
        assert!(e.contains("'x1'") || e.contains("x1"), "{e}");
        assert!(e.contains("an entry the program does not have"), "{e}");
        let mut img = two_entries();
        img.bindings.retain(|b| b.name != "y1");
        let e = ProgramImage::parse(&img.to_bytes()).unwrap_err().to_string();
        assert!(e.contains("entry 1") && e.contains("no output"), "{e}");
    }

    #[test]
    fn an_image_roundtrips() {
        let img = sample();
        assert_eq!(ProgramImage::parse(&img.to_bytes()), Ok(img));
    }

    fn with_layers() -> ProgramImage {
        let mut img = sample();
        img.layers = vec![
            Layer { name: "gpu_0/conv_1".into(), op_type: "Conv".into(), starts: vec![0] },
            Layer { name: "ünïcode".into(), op_type: "Relu".into(), starts: vec![1] },
        ];
        img
    }

    /// The layers section round-trips, and says which layer an instruction is in.
    #[test]
    fn layers_roundtrip_and_name_each_instruction() {
        let img = with_layers();
        let back = ProgramImage::parse(&img.to_bytes()).unwrap();
        assert_eq!(back, img);
        assert_eq!(back.layer_of(0, 0).map(|l| l.name.as_str()), Some("gpu_0/conv_1"));
        assert_eq!(back.layer_of(0, 1).map(|l| l.op_type.as_str()), Some("Relu"));
        assert_eq!(back.layer_index(0, 7), Some(1), "past the last start is the last layer");
        assert_eq!(back.layer_of(3, 0), None, "no such core");
        assert_eq!(sample().layer_of(0, 0), None, "a program without layers names none");
    }

    /// A start past its stream, a start before the previous layer's, and a name that is
    /// not UTF-8 are each refused by name.
    #[test]
    fn bad_layers_are_refused_by_name() {
        let mut img = with_layers();
        img.layers[1].starts[0] = 3;
        let e = ProgramImage::parse(&img.to_bytes()).unwrap_err().to_string();
        assert!(e.contains("layers section: layer 1's start 3 on core 0"), "{e}");
        let mut img = with_layers();
        img.layers[0].starts[0] = 2;
        let e = ProgramImage::parse(&img.to_bytes()).unwrap_err().to_string();
        assert!(e.contains("before the previous layer's start"), "{e}");
        let img = with_layers();
        let mut bytes = img.to_bytes();
        let at = bytes.windows(3).position(|w| w == b"gpu").unwrap();
        bytes[at] = 0xff;
        reseal(&mut bytes);
        let e = ProgramImage::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("layer 0's name or op type is not valid: is not UTF-8"), "{e}");
    }

    #[test]
    fn truncation_and_corruption_are_named() {
        let bytes = sample().to_bytes();
        assert!(matches!(ProgramImage::parse(&bytes[..10]), Err(ContainerError::TooShort { .. })));
        assert!(matches!(ProgramImage::parse(&bytes[..bytes.len() - 1]), Err(ContainerError::LengthMismatch { .. })));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(ProgramImage::parse(&bad), Err(ContainerError::ChecksumMismatch { .. })));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(ProgramImage::parse(&bad), Err(ContainerError::BadMagic { .. })));
    }

    #[test]
    fn a_binding_past_ddr_is_named_after_reseal() {
        let mut img = sample();
        img.bindings[1].ddr_offset = 4090;
        let err = ProgramImage::parse(&img.to_bytes()).unwrap_err();
        assert_eq!(
            err,
            ContainerError::BindingOutsideDdr { name: "y".into(), start: 4090, end: 4154, ddr_bytes: 4096 }
        );
    }
}
