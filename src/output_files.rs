//! Files the tools write, made safe against names that come from a model or a program.
//!
//! Buffer, program, node and configuration names are chosen by whoever wrote the model or
//! the program container, and a legal ONNX name may be `../../x` or `gpu_0/softmax_1`.
//! [`file_component`] turns any such name into one file-name component that cannot leave
//! the directory it is joined to, and [`stage`] / [`Staged::commit`] create a file inside
//! a directory without following a link planted there, replacing an existing file
//! atomically (a crash leaves either the old file or the new one, never half of one).
//!
//! The naming rule (also in docs/tools.md):
//! - ASCII letters and digits, `-`, `_`, `+`, `=`, `,`, `@`, and non-ASCII letters and
//!   digits are kept; `.` is kept except as the first character;
//! - every other byte of the name's UTF-8 (`/`, `\`, `%`, `~`, spaces, control
//!   characters, a leading `.`) is written `%XX` in upper-case hex, as URLs do:
//!   `gpu_0/softmax_1` becomes `gpu_0%2Fsoftmax_1`, `../../x` becomes `%2E.%2F..%2Fx`;
//! - the empty name becomes `%`;
//! - a component longer than [`MAX_COMPONENT_BYTES`] keeps its first bytes and ends in
//!   `~` and 16 hex digits of a hash of the whole name (`~` appears nowhere else).
//!
//! Distinct names give distinct components: the escaping is reversible, and a shortened
//! component carries the hash of the name it came from.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest component [`file_component`] returns, in bytes: short enough that the tools'
/// prefixes and suffixes (`-activation-12-inf-123456.bin`) keep a file name within the
/// 255 bytes Linux and macOS allow.
pub const MAX_COMPONENT_BYTES: usize = 160;

/// Bytes of a shortened component's tail: `~` and 16 hex digits.
const HASH_TAIL_BYTES: usize = 17;

fn kept(c: char, first: bool) -> bool {
    match c {
        '.' => !first,
        '-' | '_' | '+' | '=' | ',' | '@' => true,
        c if c.is_ascii() => c.is_ascii_alphanumeric(),
        c => c.is_alphanumeric(),
    }
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `name` as one safe file-name component (the rule is in the module doc).
pub fn file_component(name: &str) -> String {
    if name.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(name.len());
    // Where `out` can be cut without splitting an escape or a character, for shortening.
    let mut cut = 0;
    let mut shortened = false;
    for (i, c) in name.char_indices() {
        let before = out.len();
        if kept(c, i == 0) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        if out.len() <= MAX_COMPONENT_BYTES - HASH_TAIL_BYTES {
            cut = out.len();
        } else if out.len() > MAX_COMPONENT_BYTES {
            shortened = true;
            break;
        }
        debug_assert!(out.len() > before);
    }
    if shortened {
        out.truncate(cut);
        out.push_str(&format!("~{:016x}", fnv1a(name.as_bytes())));
    }
    out
}

/// Whether `name` is usable as one component as it stands: not empty, not `.` or `..`,
/// no separator and no NUL. The tools' own fixed names pass; a model's may not.
pub fn is_single_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// A file written under a temporary name in its directory, not yet in place.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staged {
    /// Where the file goes when committed.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Moves the file to its name, replacing whatever entry is there (a file, or a link,
    /// which is replaced, not followed) in one step.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(std::mem::take(&mut self.dest))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Creates a file that did not exist, never following a link: `create_new` is
/// `O_CREAT | O_EXCL`, which fails on any existing entry, a symbolic link included.
fn create_fresh(dir: &Path) -> io::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".aicsim-{}-{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            // Somebody's entry (or a planted link) holds that name: take the next one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes `bytes` to a new temporary file in `dir`, to be renamed to `dir/file_name` by
/// [`Staged::commit`] (or removed when dropped). `file_name` must be one component
/// ([`is_single_component`]); pass a model's names through [`file_component`] first.
pub fn stage(dir: &Path, file_name: &str, bytes: &[u8]) -> io::Result<Staged> {
    if !is_single_component(file_name) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("'{file_name}' is not a single file name")));
    }
    let (tmp, mut file) = create_fresh(dir)?;
    let staged = Staged { tmp, dest: dir.join(file_name), committed: false };
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(staged)
}

/// [`stage`] then [`Staged::commit`]: `dir/file_name` holds `bytes`, or is as it was.
pub fn write_atomic(dir: &Path, file_name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    stage(dir, file_name, bytes)?.commit()
}

/// A file path the user gave, as its directory (`.` for a bare name) and its file name,
/// which must be one component.
pub fn user_file(path: &Path) -> Result<(PathBuf, String), String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_single_component(n))
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    Ok((dir, name.to_string()))
}

/// Files to create once a tool's work has succeeded: nothing is written if it fails.
/// Each is a directory the user chose (created if missing) and one file name in it,
/// which the tools made (model-supplied names pass through [`file_component`] first).
#[derive(Debug, Default)]
pub struct PendingFiles(Vec<(PathBuf, String, Vec<u8>)>);

impl PendingFiles {
    pub fn push(&mut self, dir: &Path, file_name: String, bytes: Vec<u8>) {
        self.0.push((dir.to_path_buf(), file_name, bytes));
    }

    /// Writes every file under a temporary name first, then renames them all into place:
    /// a failure before the renames leaves every file as it was, and no file is ever
    /// seen half-written or reached through a link planted under its name. Returns the
    /// files written, in the order they were pushed.
    pub fn write_all(self) -> Result<Vec<Written>, String> {
        let mut staged = Vec::with_capacity(self.0.len());
        for (dir, name, bytes) in &self.0 {
            let result = std::fs::create_dir_all(dir).and_then(|()| stage(dir, name, bytes));
            match result {
                Ok(s) => staged.push((s, shown(dir, name))),
                Err(e) => return Err(format!("cannot write {}: {e}", dir.join(name).display())),
            }
        }
        let mut written = Vec::with_capacity(staged.len());
        for (s, path) in staged {
            let dest = s.dest().to_path_buf();
            let replaced = dest.symlink_metadata().is_ok();
            s.commit().map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
            written.push(Written { path, replaced });
        }
        Ok(written)
    }
}

/// A file a tool wrote: its path as the user named its directory, and whether it took
/// the place of an earlier file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub path: String,
    pub replaced: bool,
}

impl Written {
    /// The lines the card's tools print for a file they write.
    pub fn announce(&self) {
        if self.replaced {
            println!("Deleting previous file: {}", self.path);
        }
        println!("Writing file:{}", self.path);
    }
}

/// `dir/name` as the user wrote the directory (`./stats` stays `./stats/...`); a bare
/// file name (directory `.` from [`user_file`]) stays bare.
fn shown(dir: &Path, name: &str) -> String {
    if dir == Path::new(".") {
        return name.to_string();
    }
    let d = dir.display().to_string();
    if d.ends_with('/') {
        format!("{d}{name}")
    } else {
        format!("{d}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inverts the escaping of an unshortened component (the rule is reversible).
    fn decode(c: &str) -> Option<String> {
        if c == "%" {
            return Some(String::new());
        }
        let mut bytes = Vec::new();
        let mut rest = c.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'%' {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            } else {
                bytes.push(b);
                rest = tail;
            }
        }
        String::from_utf8(bytes).ok()
    }

    #[test]
    fn the_documented_examples_hold() {
        assert_eq!(file_component("gpu_0/softmax_1"), "gpu_0%2Fsoftmax_1");
        assert_eq!(file_component("../../x"), "%2E.%2F..%2Fx");
        assert_eq!(file_component("output"), "output");
        assert_eq!(file_component("a.b"), "a.b");
        assert_eq!(file_component(".hidden"), "%2Ehidden");
        assert_eq!(file_component(""), "%");
        assert_eq!(file_component("x\0y\nz"), "x%00y%0Az");
        assert_eq!(file_component("50%~"), "50%25%7E");
        assert_eq!(file_component("ü/é"), "ü%2Fé");
        let long = "n".repeat(300);
        let c = file_component(&long);
        assert_eq!(c.len(), MAX_COMPONENT_BYTES);
        assert!(c.starts_with(&"n".repeat(MAX_COMPONENT_BYTES - HASH_TAIL_BYTES)));
        assert_ne!(c, file_component(&"n".repeat(301)));
    }

    fn tricky() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[./\\\\%~a_\u{0}\n]{0,12}",
            Just("..".to_string()),
            Just("/abs".to_string()),
            Just("a/../../b".to_string()),
            "[a%/]{150,330}",
            "\\PC{100,200}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn a_component_is_one_safe_name(name in tricky()) {
            let c = file_component(&name);
            prop_assert!(is_single_component(&c), "{name:?} -> {c:?}");
            prop_assert!(!c.contains(|ch: char| ch.is_control()), "{name:?} -> {c:?}");
            prop_assert!(!c.starts_with('.'), "{name:?} -> {c:?}");
            prop_assert!(c.len() <= MAX_COMPONENT_BYTES, "{name:?} -> {} bytes", c.len());
            if !c.contains('~') {
                prop_assert_eq!(decode(&c), Some(name.clone()));
            }
        }

        #[test]
        fn distinct_names_give_distinct_components(a in tricky(), b in tricky()) {
            prop_assume!(a != b);
            prop_assert_ne!(file_component(&a), file_component(&b));
        }

        #[test]
        fn names_differing_only_in_escaped_characters_stay_apart(
            stem in "[a-z]{0,170}",
            x in "[/\\\\%~ .\n]",
            y in "[/\\\\%~ .\n]",
        ) {
            prop_assume!(x != y);
            let (a, b) = (format!("{stem}{x}"), format!("{stem}{y}"));
            prop_assert_ne!(file_component(&a), file_component(&b));
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("aicsim-output-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_link_planted_under_the_name_is_replaced_not_followed() {
        let d = scratch("link");
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let out = d.join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("result.bin")).unwrap();
        write_atomic(&out, "result.bin", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(out.join("result.bin")).unwrap().file_type().is_file());
        assert_eq!(std::fs::read(out.join("result.bin")).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_staged_file_is_invisible_until_committed_and_gone_if_dropped() {
        let d = scratch("staged");
        std::fs::write(d.join("f"), b"old").unwrap();
        let s = stage(&d, "f", b"new").unwrap();
        assert_eq!(std::fs::read(d.join("f")).unwrap(), b"old");
        drop(s);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "the temporary file was left behind");
        assert_eq!(std::fs::read(d.join("f")).unwrap(), b"old");
        let s = stage(&d, "f", b"new").unwrap();
        assert_eq!(s.commit().unwrap(), d.join("f"));
        assert_eq!(std::fs::read(d.join("f")).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert_eq!(stage(&d, bad, b"x").unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
