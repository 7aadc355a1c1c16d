//! A ZIP archive written front to back (the container of an xlsx): each
//! entry deflated as its bytes arrive, sizes and CRC in a data descriptor
//! after it (general purpose flag bit 3), the central directory at the end.
//! No ZIP64: the xlsx row cap keeps an entry far below 4 GiB, and going
//! past it is an error rather than a broken file.

use flate2::Compression;
use flate2::write::DeflateEncoder;
use std::io::{self, Write};

struct Entry {
    name: String,
    crc: u32,
    compressed: u64,
    size: u64,
    offset: u64,
}

struct Open {
    entry: Entry,
    enc: DeflateEncoder<Vec<u8>>,
    crc: crc32fast::Hasher,
}

pub struct ZipWriter {
    /// Bytes handed out so far (offsets of local headers).
    written: u64,
    done: Vec<Entry>,
    open: Option<Open>,
    dos_time: u16,
    dos_date: u16,
}

/// Flags: sizes follow the data (bit 3), names are UTF-8 (bit 11).
const FLAGS: u16 = 0x0008 | 0x0800;
const DEFLATE: u16 = 8;
const VERSION: u16 = 20;

fn too_big() -> io::Error {
    io::Error::other("the archive passed 4 GiB (ZIP64 is not written)")
}

fn u32_of(n: u64) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| too_big())
}

impl ZipWriter {
    pub fn new(now: chrono::DateTime<chrono::Utc>) -> ZipWriter {
        use chrono::{Datelike, Timelike};
        let year = (now.year().clamp(1980, 2107) - 1980) as u16;
        ZipWriter {
            written: 0,
            done: Vec::new(),
            open: None,
            dos_time: ((now.hour() as u16) << 11)
                | ((now.minute() as u16) << 5)
                | (now.second() as u16 / 2),
            dos_date: (year << 9) | ((now.month() as u16) << 5) | now.day() as u16,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
    }

    /// Starts an entry; the previous one must be finished.
    pub fn start(&mut self, name: &str, out: &mut Vec<u8>) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other("a ZIP entry is still open"));
        }
        let offset = self.written;
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&DEFLATE.to_le_bytes());
        h.extend_from_slice(&self.dos_time.to_le_bytes());
        h.extend_from_slice(&self.dos_date.to_le_bytes());
        h.extend_from_slice(&[0; 12]); // crc, sizes: in the descriptor
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        self.emit(out, &h);
        self.open = Some(Open {
            entry: Entry {
                name: name.to_string(),
                crc: 0,
                compressed: 0,
                size: 0,
                offset,
            },
            enc: DeflateEncoder::new(Vec::new(), Compression::fast()),
            crc: crc32fast::Hasher::new(),
        });
        Ok(())
    }

    /// Compresses `data` into the open entry; what the compressor has
    /// produced so far goes to `out`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let Some(o) = self.open.as_mut() else {
            return Err(io::Error::other("no ZIP entry is open"));
        };
        o.crc.update(data);
        o.entry.size += data.len() as u64;
        o.enc.write_all(data)?;
        let produced = std::mem::take(o.enc.get_mut());
        o.entry.compressed += produced.len() as u64;
        self.written += produced.len() as u64;
        out.extend_from_slice(&produced);
        Ok(())
    }

    /// Ends the open entry with its data descriptor.
    pub fn finish_entry(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let Some(mut o) = self.open.take() else {
            return Err(io::Error::other("no ZIP entry is open"));
        };
        o.enc.try_finish()?;
        let rest = std::mem::take(o.enc.get_mut());
        o.entry.compressed += rest.len() as u64;
        self.written += rest.len() as u64;
        out.extend_from_slice(&rest);
        o.entry.crc = o.crc.finalize();
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&o.entry.crc.to_le_bytes());
        d.extend_from_slice(&u32_of(o.entry.compressed)?.to_le_bytes());
        d.extend_from_slice(&u32_of(o.entry.size)?.to_le_bytes());
        self.emit(out, &d);
        self.done.push(o.entry);
        Ok(())
    }

    /// One small entry in one call.
    pub fn entry(&mut self, name: &str, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.start(name, out)?;
        self.write(data, out)?;
        self.finish_entry(out)
    }

    /// The central directory and its end record.
    pub fn finish(mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other("a ZIP entry is still open"));
        }
        let start = self.written;
        let entries = std::mem::take(&mut self.done);
        for e in &entries {
            let mut c = Vec::with_capacity(46 + e.name.len());
            c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            c.extend_from_slice(&VERSION.to_le_bytes()); // made by
            c.extend_from_slice(&VERSION.to_le_bytes()); // needed
            c.extend_from_slice(&FLAGS.to_le_bytes());
            c.extend_from_slice(&DEFLATE.to_le_bytes());
            c.extend_from_slice(&self.dos_time.to_le_bytes());
            c.extend_from_slice(&self.dos_date.to_le_bytes());
            c.extend_from_slice(&e.crc.to_le_bytes());
            c.extend_from_slice(&u32_of(e.compressed)?.to_le_bytes());
            c.extend_from_slice(&u32_of(e.size)?.to_le_bytes());
            c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            c.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
            c.extend_from_slice(&u32_of(e.offset)?.to_le_bytes());
            c.extend_from_slice(e.name.as_bytes());
            self.emit(out, &c);
        }
        let size = self.written - start;
        let n = u16::try_from(entries.len()).map_err(|_| too_big())?;
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0; 4]); // this disk, the directory's disk
        end.extend_from_slice(&n.to_le_bytes());
        end.extend_from_slice(&n.to_le_bytes());
        end.extend_from_slice(&u32_of(size)?.to_le_bytes());
        end.extend_from_slice(&u32_of(start)?.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.emit(out, &end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// What we write, flate2 (a second implementation of DEFLATE) reads
    /// back at the offsets the central directory names.
    #[test]
    fn entries_read_back_through_the_central_directory() -> io::Result<()> {
        let mut out = Vec::new();
        let mut z = ZipWriter::new(chrono::Utc::now());
        z.entry("a.txt", b"hello", &mut out)?;
        z.start("b.txt", &mut out)?;
        for _ in 0..1000 {
            z.write(b"0123456789", &mut out)?;
        }
        z.finish_entry(&mut out)?;
        z.finish(&mut out)?;
        let eocd = out.len() - 22;
        assert_eq!(&out[eocd..eocd + 4], &0x0605_4b50u32.to_le_bytes());
        let cd = u32::from_le_bytes([
            out[eocd + 16],
            out[eocd + 17],
            out[eocd + 18],
            out[eocd + 19],
        ]) as usize;
        let mut p = cd;
        let mut names = Vec::new();
        while p < eocd {
            let le32 = |i: usize| u32::from_le_bytes([out[i], out[i + 1], out[i + 2], out[i + 3]]);
            let name_len = u16::from_le_bytes([out[p + 28], out[p + 29]]) as usize;
            let (crc, size, offset) = (le32(p + 16), le32(p + 24), le32(p + 42) as usize);
            let name = String::from_utf8_lossy(&out[p + 46..p + 46 + name_len]).to_string();
            let data_at =
                offset + 30 + u16::from_le_bytes([out[offset + 26], out[offset + 27]]) as usize;
            let mut d = flate2::read::DeflateDecoder::new(&out[data_at..]);
            let mut plain = Vec::new();
            d.read_to_end(&mut plain)?;
            plain.truncate(size as usize);
            assert_eq!(crc32fast::hash(&plain), crc, "{name}");
            names.push((name, plain.len()));
            p += 46 + name_len;
        }
        assert_eq!(names, vec![("a.txt".into(), 5), ("b.txt".into(), 10_000)]);
        Ok(())
    }
}
