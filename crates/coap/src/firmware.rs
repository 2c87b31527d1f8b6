//! Firmware and software images over CoAP, as ThingsBoard serves them:
//! `GET fw/{token}?title=&version=[&size=&chunk=]` (`sw/{token}` for software; also
//! `api/v1/{token}/firmware`). With `size` (> 0) the answer is chunk `chunk` of that many bytes;
//! without it the whole image goes block-wise (RFC 7959 Block2): the client's Block2 option
//! picks the block (`num`, size 16 to 1024), the first answer without one carries block 0 of
//! 1024 bytes, and every block says whether more follow and the image's size (Size2).
//!
//! Blocks are read from the image file on demand (nothing cached per client), and the Block2
//! option is encoded here with its full 20-bit block number, so images of any size up to the
//! platform's limit (more than coap-lite's 16-bit `BlockValue`, 64 MiB in 1 KiB blocks) go.

use ib_core::firmware::{Kind, MAX_CHUNK_BYTES};
use ib_core::{CoreError, DeviceCtx, Platform};

/// The block size when the client does not choose one (szx 6).
const DEFAULT_SZX: u8 = 6;

/// A Block2 option value (RFC 7959 2.2): block number, more flag, size exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block2 {
    pub num: u32,
    pub more: bool,
    /// Block size = 2^(szx + 4); 0..=6 (7, BERT, is read as 6).
    pub szx: u8,
}

impl Block2 {
    /// Decodes an option value (0 to 3 bytes, big-endian).
    pub fn parse(raw: &[u8]) -> Option<Block2> {
        if raw.len() > 3 {
            return None;
        }
        let v = raw.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        Some(Block2 {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx: ((v & 0x7) as u8).min(6),
        })
    }

    /// The option value, shortest form.
    pub fn encode(self) -> Vec<u8> {
        let v = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx);
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        bytes[skip..].to_vec()
    }

    /// The block size in bytes.
    pub fn size(self) -> u64 {
        1 << (u32::from(self.szx) + 4)
    }
}

/// What the loop sends back for an image request.
pub struct ImageReply {
    pub bytes: Vec<u8>,
    /// The Block2 option of the answer (none for a ThingsBoard `size`/`chunk` request).
    pub block2: Option<Block2>,
    /// The whole image's size (Size2).
    pub total: u64,
}

fn query<'a>(query: &'a [String], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find_map(|q| q.strip_prefix(name)?.strip_prefix('='))
}

fn number<T: std::str::FromStr>(query_: &[String], name: &str) -> Result<Option<T>, CoreError> {
    match query(query_, name) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| CoreError::Invalid(format!("{name} must be a number, not {s:?}"))),
    }
}

/// The package of `kind` assigned to the device: a chunk of it, or the block the client asked for.
pub fn image(
    p: &Platform,
    ctx: &DeviceCtx,
    kind: Kind,
    q: &[String],
    block2: Option<Block2>,
) -> Result<ImageReply, CoreError> {
    let Some(assigned) = p.firmware.of_device(&ctx.id, kind)? else {
        return Err(CoreError::NotFound(format!(
            "no {} is assigned to the device",
            kind.prefix()
        )));
    };
    let pkg = &assigned.package;
    // ThingsBoard: a title or version that is not the assigned one is a bad request.
    let mismatch = |name: &str, want: &str| query(q, name).is_some_and(|v| v != want);
    if mismatch("title", &pkg.title) || mismatch("version", &pkg.version) {
        return Err(CoreError::Invalid(format!(
            "{} {:?} {:?} is the package assigned to this device",
            kind.prefix(),
            pkg.title,
            pkg.version
        )));
    }
    let size: Option<usize> = number(q, "size")?;
    let chunk: Option<u64> = number(q, "chunk")?;
    if let Some(size) = size.filter(|s| *s > 0) {
        if size > MAX_CHUNK_BYTES {
            return Err(CoreError::Invalid(format!(
                "a chunk is at most {MAX_CHUNK_BYTES} bytes"
            )));
        }
        let offset = chunk.unwrap_or(0).saturating_mul(size as u64);
        return Ok(ImageReply {
            bytes: p.firmware.read(&pkg.id, offset, size)?,
            block2: None,
            total: pkg.size,
        });
    }
    let want = block2.unwrap_or(Block2 {
        num: 0,
        more: false,
        szx: DEFAULT_SZX,
    });
    let offset = u64::from(want.num) * want.size();
    if offset >= pkg.size && !(offset == 0 && pkg.size == 0) {
        return Err(CoreError::Invalid(format!(
            "block {} of {} bytes is past the image's {} bytes",
            want.num,
            want.size(),
            pkg.size
        )));
    }
    let bytes = p.firmware.read(&pkg.id, offset, want.size() as usize)?;
    let more = offset + (bytes.len() as u64) < pkg.size;
    Ok(ImageReply {
        bytes,
        block2: Some(Block2 { more, ..want }),
        total: pkg.size,
    })
}

#[cfg(test)]
mod tests {
    use super::Block2;

    #[test]
    fn block2_round_trips_with_20_bit_numbers() {
        for (num, more, szx) in [
            (0, false, 0),
            (0, true, 6),
            (15, true, 2),
            (65_536, true, 6),
        ] {
            let b = Block2 { num, more, szx };
            assert_eq!(Block2::parse(&b.encode()), Some(b));
        }
        assert_eq!(
            Block2 {
                num: 0,
                more: false,
                szx: 0
            }
            .encode(),
            Vec::<u8>::new()
        );
        assert_eq!(
            (Block2 {
                num: (1 << 20) - 1,
                more: true,
                szx: 6
            })
            .encode()
            .len(),
            3
        );
        assert_eq!(
            Block2::parse(&[0x0e]).unwrap().szx,
            6,
            "BERT (7) is read as 1024"
        );
        assert_eq!(Block2::parse(&[1, 2, 3, 4]), None);
        assert_eq!(
            Block2 {
                num: 0,
                more: false,
                szx: 6
            }
            .size(),
            1024
        );
    }
}
