//! Firmware over Modbus: an image written to a device's bootloader through a window of holding
//! registers, for devices whose `[[modbus]]` has `firmware = { register = R, block = N }`.
//!
//! The window at `R` (register offsets; 16-bit words, big-endian, two image bytes per word):
//!
//! | offset | access | meaning |
//! |---|---|---|
//! | 0 | write | command: 1 begin, 2 install, 3 abort |
//! | 1 | read | status: 0 idle, 1 receiving, 2 installing, 3 updated, 4 failed |
//! | 2 | read | error code when failed (the device's own) |
//! | 3–4 | write | image size in bytes (u32, high word first) |
//! | 5–20 | write | the image's SHA-256 (32 bytes) |
//! | 21–22 | write | offset of the block that follows, in bytes (u32, high word first) |
//! | 23… | write | the block: up to `N` words, the last one padded with a zero byte |
//!
//! The edge writes size and SHA-256 (one request), then command 1, then every block in order
//! (one Write Multiple Registers of offset + data each: at most 2 + 120 = 122 registers, within
//! Modbus' 123), then command 2, and reads the status every 200 ms until 3 (updated) or 4
//! (failed), for at most `install_timeout`. The device checks the SHA-256 itself before
//! installing; a failure or a timeout ends with command 3 (abort), best effort.

use std::time::Duration;

use std::io::Read;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Context, Reader, Writer};

use crate::config::FirmwareConfig;
use crate::firmware::Image;

/// Most image words per block (a block write carries 2 more: its offset).
pub const MAX_BLOCK: u16 = 120;

const COMMAND: u16 = 0;
const STATUS: u16 = 1;
const SIZE: u16 = 3;
const OFFSET: u16 = 21;
const BEGIN: u16 = 1;
const INSTALL: u16 = 2;
const ABORT: u16 = 3;
const UPDATED: u16 = 3;
const FAILED: u16 = 4;
const STATUS_EVERY: Duration = Duration::from_millis(200);

/// Registers the window spans for blocks of `block` words.
pub fn window(block: u16) -> u32 {
    u32::from(OFFSET) + 2 + u32::from(block)
}

/// The two words of a u32, high first.
fn u32_words(v: u32) -> [u16; 2] {
    [(v >> 16) as u16, v as u16]
}

/// Bytes as big-endian words, an odd last byte padded with zero.
pub fn words(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect()
}

/// The header write: size, then SHA-256.
pub fn header(size: u32, sha256: &[u8; 32]) -> Vec<u16> {
    let mut w = u32_words(size).to_vec();
    w.extend(words(sha256));
    w
}

/// Sends `image` to the device on `ctx` and waits for it to install it. `per_request` bounds
/// each Modbus request. An error names the step and what the device said.
pub async fn flash(
    ctx: &mut Context,
    cfg: &FirmwareConfig,
    image: &Image,
    per_request: Duration,
) -> Result<(), String> {
    let result = send(ctx, cfg, image, per_request).await;
    if result.is_err() {
        let abort = ctx.write_single_register(cfg.register + COMMAND, ABORT);
        let _ = timeout(per_request, abort).await;
    }
    result
}

async fn send(
    ctx: &mut Context,
    cfg: &FirmwareConfig,
    image: &Image,
    per_request: Duration,
) -> Result<(), String> {
    let size = u32::try_from(image.size)
        .map_err(|_| format!("{} bytes is more than Modbus offsets reach", image.size))?;
    let r = cfg.register;
    write(
        ctx,
        r + SIZE,
        &header(size, &image.sha256),
        per_request,
        "header",
    )
    .await?;
    write(ctx, r + COMMAND, &[BEGIN], per_request, "begin").await?;
    // Blocks of at most 240 bytes of a file just verified (in the page cache): plain reads.
    let mut file = std::io::BufReader::new(
        std::fs::File::open(&image.path).map_err(|e| format!("opening the cached image: {e}"))?,
    );
    let mut buf = vec![0u8; usize::from(cfg.block) * 2];
    let mut offset = 0u32;
    while offset < size {
        let n = (buf.len() as u32).min(size - offset) as usize;
        file.read_exact(&mut buf[..n])
            .map_err(|e| format!("reading the cached image: {e}"))?;
        let mut block = u32_words(offset).to_vec();
        block.extend(words(&buf[..n]));
        write(ctx, r + OFFSET, &block, per_request, "block").await?;
        offset += n as u32;
    }
    write(ctx, r + COMMAND, &[INSTALL], per_request, "install").await?;
    let deadline = Instant::now() + cfg.install_timeout;
    loop {
        let read = timeout(per_request, ctx.read_holding_registers(r + STATUS, 2)).await;
        match read {
            Ok(Ok(Ok(w))) if w.first() == Some(&UPDATED) => return Ok(()),
            Ok(Ok(Ok(w))) if w.first() == Some(&FAILED) => {
                return Err(format!(
                    "the device refused the image (its error code {})",
                    w.get(1).copied().unwrap_or(0)
                ))
            }
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(ex))) => return Err(format!("reading the status: Modbus exception {ex}")),
            Ok(Err(e)) => return Err(format!("reading the status: {e}")),
            // A device busy installing may not answer for a while.
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the device did not finish installing within {:?}",
                cfg.install_timeout
            ));
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

async fn write(
    ctx: &mut Context,
    at: u16,
    w: &[u16],
    per_request: Duration,
    step: &str,
) -> Result<(), String> {
    let call = async {
        if w.len() == 1 {
            ctx.write_single_register(at, w[0]).await
        } else {
            ctx.write_multiple_registers(at, w).await
        }
    };
    match timeout(per_request, call).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(ex))) => Err(format!("{step} (register {at}): Modbus exception {ex}")),
        Ok(Err(e)) => Err(format!("{step} (register {at}): {e}")),
        Err(_) => Err(format!(
            "{step} (register {at}): no answer within {per_request:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_big_endian_words_padded() {
        assert_eq!(words(&[1, 2, 3]), vec![0x0102, 0x0300]);
        assert_eq!(words(&[]), Vec::<u16>::new());
        let h = header(0x0001_0002, &[0xAB; 32]);
        assert_eq!(h.len(), 18);
        assert_eq!(&h[..3], &[1, 2, 0xABAB]);
    }

    #[test]
    fn a_full_block_write_fits_in_one_request() {
        // Offset (2) + MAX_BLOCK words: Write Multiple Registers takes at most 123.
        const { assert!(2 + MAX_BLOCK <= 123) };
        assert_eq!(window(120), 23 + 120);
    }
}
