//! Reads a plugin image as data, for `binance-syncd check`: is it a shared object for this
//! machine, and does its dynamic symbol table define the entry symbol? For a program plugin
//! that is a binary: is it an executable for this machine, and which dynamic loader does it
//! name? `check` runs as root
//! (docs/operations.md, "Install"), and `dlopen` runs a library's initialisers, so `check` never loads a
//! plugin: the ABI version and the plugin's own version are read by `run` when it loads one.

use std::fs::File;
use std::os::unix::fs::FileExt;

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;
/// Linux's `PATH_MAX`: a longer `PT_INTERP` is no path `execve` opens.
const PATH_MAX: u64 = 4096;
const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;
const STT_FUNC: u8 = 2;
/// No section a plugin needs is larger: a bound on what a crafted header can make us read.
const MAX_SECTION: u64 = 64 << 20;

/// The machine this daemon was built for, as `e_machine` spells it (`None`: not checked).
const MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else {
    None
};

/// Reads `len` bytes at `offset`, or says the file is cut short.
fn bytes(f: &File, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    if len > MAX_SECTION {
        return Err(format!("a section of {len} bytes: not a plugin"));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).map_err(|e| format!("not an ELF shared object (cut short: {e})"))?;
    Ok(buf)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// The 64-byte ELF header of `file`, if it is a 64-bit little-endian ELF file (`what` it should
/// be, for the messages).
fn header(file: &File, what: &str) -> Result<Vec<u8>, String> {
    let head = bytes(file, 0, 64).map_err(|_| format!("not an ELF {what} (too short)"))?;
    if head[..4] != *b"\x7fELF" {
        return Err(format!("not an ELF {what}"));
    }
    if head[4] != ELFCLASS64 || head[5] != ELFDATA2LSB || cfg!(target_endian = "big") {
        return Err("not a 64-bit little-endian ELF object".into());
    }
    Ok(head)
}

/// `Ok` when the ELF header `head` is for the machine this daemon was built for.
fn for_this_machine(head: &[u8], what: &str) -> Result<(), String> {
    let machine = u16_at(head, 18);
    match MACHINE {
        Some(m) if m != machine => Err(format!("{what} for another machine (e_machine {machine})")),
        _ => Ok(()),
    }
}

/// Whether `file` starts as an ELF file does (a program plugin that is a binary rather than a
/// script).
pub fn is_elf(file: &File) -> bool {
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).is_ok() && magic == *b"\x7fELF"
}

/// For a program plugin that is an ELF binary: `Ok` with the dynamic loader it names
/// (`PT_INTERP`, which must exist for `execve` to start it), `None` for a static one; `Err` when
/// `execve` would not run it here (not an executable, another machine).
pub fn interpreter(file: &File) -> Result<Option<String>, String> {
    let head = header(file, "executable")?;
    if !matches!(u16_at(&head, 16), ET_EXEC | ET_DYN) {
        return Err("an ELF file, but neither an executable nor position-independent".into());
    }
    for_this_machine(&head, "an ELF executable")?;
    let (phoff, phentsize, phnum) =
        (u64_at(&head, 0x20), u64::from(u16_at(&head, 0x36)), u64::from(u16_at(&head, 0x38)));
    if phnum == 0 || phentsize < 56 {
        return Err("an ELF file without program headers: nothing to run".into());
    }
    let table = bytes(file, phoff, phentsize * phnum)?;
    let interp = table.chunks_exact(phentsize as usize).find(|p| u32_at(p, 0) == PT_INTERP);
    let Some(p) = interp else { return Ok(None) };
    let (off, size) = (u64_at(p, 8), u64_at(p, 32));
    if size > PATH_MAX {
        return Err(format!("a program interpreter path of {size} bytes: malformed"));
    }
    let path = bytes(file, off, size)?;
    let path = path.split(|b| *b == 0).next().unwrap_or_default();
    Ok(Some(String::from_utf8_lossy(path).into_owned()))
}

/// `Ok` when `file` is a 64-bit little-endian ELF shared object for this machine whose dynamic
/// symbol table defines the function `symbol`; otherwise why not.
pub fn defines(file: &File, symbol: &[u8]) -> Result<(), String> {
    let head = header(file, "shared object")?;
    if u16_at(&head, 16) != ET_DYN {
        return Err("an ELF file, but not a shared object".into());
    }
    for_this_machine(&head, "a shared object")?;
    let (shoff, shentsize, shnum) =
        (u64_at(&head, 0x28), u64::from(u16_at(&head, 0x3a)), u64::from(u16_at(&head, 0x3c)));
    if shoff == 0 || shnum == 0 || shentsize < 64 {
        return Err("no section headers: cannot look for the entry symbol without loading it".into());
    }
    let table = bytes(file, shoff, shentsize * shnum)?;
    let section = |i: u64| {
        let at = (i * shentsize) as usize;
        // (type, offset, size, link, entsize)
        (
            u32_at(&table, at + 4),
            u64_at(&table, at + 24),
            u64_at(&table, at + 32),
            u32_at(&table, at + 40),
            u64_at(&table, at + 56),
        )
    };
    let Some(dynsym) = (0..shnum).map(section).find(|s| s.0 == SHT_DYNSYM) else {
        return Err("no dynamic symbol table".into());
    };
    let (_, off, size, link, entsize) = dynsym;
    if u64::from(link) >= shnum || entsize < 24 {
        return Err("a malformed dynamic symbol table".into());
    }
    let (_, str_off, str_size, _, _) = section(u64::from(link));
    let syms = bytes(file, off, size)?;
    let names = bytes(file, str_off, str_size)?;
    let found = syms.chunks_exact(entsize as usize).any(|s| {
        let name = u32_at(s, 0) as usize;
        let defined = u16_at(s, 6) != SHN_UNDEF && s[4] & 0xf == STT_FUNC;
        defined && names.get(name..).is_some_and(|rest| rest.split(|b| *b == 0).next() == Some(symbol))
    });
    if found {
        Ok(())
    } else {
        Err(format!("no entry symbol {} in its dynamic symbol table", String::from_utf8_lossy(symbol)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!("syncd-elf-{}-{}", std::process::id(), bytes.len()));
        std::fs::File::create(&path).and_then(|mut f| f.write_all(bytes)).unwrap();
        let f = File::open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        f
    }

    #[test]
    fn text_and_truncated_headers_are_not_shared_objects() {
        assert!(defines(&temp(b"this is not a shared object\n"), b"x").unwrap_err().contains("not an ELF"));
        let mut head = b"\x7fELF\x02\x01\x01".to_vec();
        head.resize(64, 0);
        head[16] = 2; // ET_EXEC
        assert!(defines(&temp(&head), b"x").unwrap_err().contains("not a shared object"));
        head[16] = 3;
        head[18..20].copy_from_slice(&MACHINE.unwrap_or(62).to_le_bytes());
        head[0x28] = 200; // section headers past the end
        head[0x3a] = 64;
        head[0x3c] = 3;
        assert!(defines(&temp(&head), b"x").unwrap_err().contains("cut short"));
    }

    #[test]
    fn a_mapped_c_library_defines_malloc_and_not_the_plugin_entry() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let Some(libc) = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.contains("/libc.so"))
        else {
            println!("skipped: no libc.so mapped into this test (a static build)");
            return;
        };
        let f = File::open(libc).unwrap();
        assert_eq!(defines(&f, b"malloc"), Ok(()), "{libc}");
        let missing = defines(&f, b"syncd_plugin_entry_v1").unwrap_err();
        assert!(missing.contains("no entry symbol syncd_plugin_entry_v1"), "{missing}");
    }

    #[test]
    fn an_executable_names_its_loader_and_text_or_a_library_is_no_program() {
        let me = File::open(std::env::current_exe().unwrap()).unwrap();
        let loader = interpreter(&me).unwrap();
        // A static build names none; a dynamic one a loader that exists.
        assert!(loader.as_ref().is_none_or(|l| std::path::Path::new(l).exists()), "{loader:?}");
        assert!(is_elf(&me));
        assert!(interpreter(&temp(b"#!/bin/sh\nexit 0\n")).unwrap_err().contains("not an ELF executable"));
        assert!(!is_elf(&temp(b"#!/bin/sh\nexit 0\n")));
        let mut head = b"\x7fELF\x02\x01\x01".to_vec();
        head.resize(72, 0); // not 64: `temp` names its file by length, and tests run at once
        head[16] = 1; // ET_REL
        assert!(interpreter(&temp(&head)).unwrap_err().contains("neither an executable"));
    }

    #[test]
    fn the_test_binary_itself_has_no_plugin_entry() {
        // An executable (ET_DYN when position-independent, as cargo builds them).
        let me = File::open(std::env::current_exe().unwrap()).unwrap();
        let r = defines(&me, b"syncd_plugin_entry_v1");
        assert!(r.is_err(), "{r:?}");
    }
}
