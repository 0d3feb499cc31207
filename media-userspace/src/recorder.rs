//! Call recordings: both tracks of an AI stream call (the caller on the
//! left, what the caller hears on the right) as a 16-bit stereo WAV at the
//! call's codec rate, written off the media hot path.
//!
//! The leg hands each 20 ms frame to its [`Recorder`], which interleaves
//! the two tracks and passes 32 KiB blocks to one writer thread, at most
//! 256 queued. A slow or full disk costs dropped blocks (counted in the
//! result) or a failed recording, never a late packet or a broken call.

use std::collections::{HashMap, VecDeque};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// What to record and whom to tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingSpec {
    /// `RE` + 32 hex digits.
    pub id: String,
    pub path: PathBuf,
    pub call_sid: String,
    pub account: String,
    /// Where the finished recording is announced (JSON, signed).
    pub status_callback: Option<String>,
}

/// A recording that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingDone {
    pub spec: RecordingSpec,
    /// Bytes of the file, header included.
    pub bytes: u64,
    pub duration_ms: u64,
    /// Blocks the writer could not take in time (audio missing).
    pub dropped_blocks: u64,
    /// Why the file is incomplete or absent (disk full, no directory…).
    pub error: Option<String>,
}

/// Told once a recording is written (from the writer thread).
pub type Done = Box<dyn FnOnce(RecordingDone) + Send>;

enum WriterMsg {
    Open {
        key: u64,
        spec: RecordingSpec,
        rate: u32,
        done: Done,
    },
    Data {
        key: u64,
        bytes: Vec<u8>,
    },
    Finish {
        key: u64,
        dropped_blocks: u64,
    },
}

/// Blocks queued for the writer at most (about 8 MiB).
const QUEUE_BLOCKS: usize = 256;
const BLOCK_BYTES: usize = 32 * 1024;
const WAV_HEADER: u64 = 44;

/// The writer's queue: one FIFO for every message (a recording's open,
/// data and finish stay in order), with audio blocks capped by a count.
struct Writer {
    tx: crossbeam_channel::Sender<WriterMsg>,
    queued_blocks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn writer() -> &'static Writer {
    static WRITER: OnceLock<Writer> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded();
        let queued_blocks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let queued = queued_blocks.clone();
        let spawned = std::thread::Builder::new()
            .name("recordings".into())
            .spawn(move || write_loop(rx, &queued));
        if let Err(e) = spawned {
            // The channel's receiver is gone: every send fails, every
            // recording reports it.
            tracing::error!(error = %e, "recording writer thread not started");
        }
        Writer { tx, queued_blocks }
    })
}

/// One recording being written.
struct Open {
    spec: RecordingSpec,
    rate: u32,
    file: Option<std::io::BufWriter<std::fs::File>>,
    data_bytes: u64,
    error: Option<String>,
    done: Done,
}

fn write_loop(rx: crossbeam_channel::Receiver<WriterMsg>, queued: &std::sync::atomic::AtomicUsize) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    for msg in rx {
        if matches!(msg, WriterMsg::Data { .. }) {
            queued.fetch_sub(1, Ordering::Relaxed);
        }
        match msg {
            WriterMsg::Open {
                key,
                spec,
                rate,
                done,
            } => {
                let (file, error) = match create(&spec.path, rate) {
                    Ok(f) => (Some(f), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                open.insert(
                    key,
                    Open {
                        spec,
                        rate,
                        file,
                        data_bytes: 0,
                        error,
                        done,
                    },
                );
            }
            WriterMsg::Data { key, bytes } => {
                if let Some(o) = open.get_mut(&key)
                    && let Some(f) = o.file.as_mut()
                {
                    match f.write_all(&bytes) {
                        Ok(()) => o.data_bytes += bytes.len() as u64,
                        Err(e) => {
                            // Disk full or gone: stop here, keep what is
                            // written, say why.
                            o.error = Some(e.to_string());
                            o.file = None;
                        }
                    }
                }
            }
            WriterMsg::Finish {
                key,
                dropped_blocks,
            } => {
                let Some(mut o) = open.remove(&key) else {
                    continue;
                };
                if let Some(mut f) = o.file.take()
                    && let Err(e) = finish(&mut f, o.rate, o.data_bytes)
                {
                    o.error.get_or_insert(e.to_string());
                }
                let frames = o.data_bytes / 4;
                let bytes = std::fs::metadata(&o.spec.path).map_or(0, |m| m.len());
                (o.done)(RecordingDone {
                    spec: o.spec,
                    bytes,
                    duration_ms: frames * 1000 / u64::from(o.rate.max(1)),
                    dropped_blocks,
                    error: o.error,
                });
            }
        }
    }
}

fn create(path: &std::path::Path, rate: u32) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&wav_header(rate, 0))?;
    Ok(f)
}

/// The 44-byte header of a 16-bit stereo PCM WAV of `data_bytes`.
pub fn wav_header(rate: u32, data_bytes: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&2u16.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 4).to_le_bytes());
    h[32..34].copy_from_slice(&4u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

/// Writes the header's sizes now that they are known.
fn finish(
    f: &mut std::io::BufWriter<std::fs::File>,
    rate: u32,
    data_bytes: u64,
) -> std::io::Result<()> {
    f.flush()?;
    let file = f.get_mut();
    let size = u32::try_from(data_bytes).unwrap_or(u32::MAX);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&wav_header(rate, size))?;
    file.seek(SeekFrom::Start(WAV_HEADER + data_bytes))?;
    file.sync_data()
}

/// A leg's side of a recording: the two tracks in, blocks out.
#[derive(Debug)]
pub struct Recorder {
    key: u64,
    /// Samples of one track ahead of the other, at most: past it the
    /// other is padded with silence, so the tracks stay aligned.
    max_skew: usize,
    caller: VecDeque<i16>,
    heard: VecDeque<i16>,
    block: Vec<u8>,
    dropped_blocks: u64,
}

impl Recorder {
    /// Starts recording `spec` at `rate`; `done` is told once it is
    /// written (from the writer thread).
    pub fn start(
        spec: RecordingSpec,
        rate: u32,
        done: impl FnOnce(RecordingDone) + Send + 'static,
    ) -> Recorder {
        static KEYS: AtomicU64 = AtomicU64::new(1);
        let key = KEYS.fetch_add(1, Ordering::Relaxed);
        let open = WriterMsg::Open {
            key,
            spec,
            rate,
            done: Box::new(done),
        };
        // Opening and finishing always go (two messages a call); only
        // audio blocks are capped.
        if let Err(crossbeam_channel::SendError(WriterMsg::Open { spec, done, .. })) =
            writer().tx.send(open)
        {
            done(RecordingDone {
                spec,
                bytes: 0,
                duration_ms: 0,
                dropped_blocks: 0,
                error: Some("the recording writer is not running".into()),
            });
        }
        Recorder {
            key,
            max_skew: rate as usize,
            caller: VecDeque::new(),
            heard: VecDeque::new(),
            block: Vec::with_capacity(BLOCK_BYTES),
            dropped_blocks: 0,
        }
    }

    /// The caller's audio (left).
    pub fn caller(&mut self, pcm: &[i16]) {
        self.caller.extend(pcm);
        self.interleave();
    }

    /// What the caller hears (right).
    pub fn heard(&mut self, pcm: &[i16]) {
        self.heard.extend(pcm);
        self.interleave();
    }

    fn interleave(&mut self) {
        for (ahead, behind) in [
            (self.caller.len(), self.heard.len()),
            (self.heard.len(), self.caller.len()),
        ] {
            if ahead > behind + self.max_skew {
                let pad = ahead - behind - self.max_skew;
                let lagging = if self.caller.len() < self.heard.len() {
                    &mut self.caller
                } else {
                    &mut self.heard
                };
                lagging.extend(std::iter::repeat_n(0, pad));
            }
        }
        let pairs = self.caller.len().min(self.heard.len());
        for (l, r) in self.caller.drain(..pairs).zip(self.heard.drain(..pairs)) {
            self.block.extend_from_slice(&l.to_le_bytes());
            self.block.extend_from_slice(&r.to_le_bytes());
        }
        if self.block.len() >= BLOCK_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let bytes = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_BYTES));
        let w = writer();
        // A writer that does not keep up costs audio, never a wait.
        if w.queued_blocks.fetch_add(1, Ordering::Relaxed) >= QUEUE_BLOCKS {
            w.queued_blocks.fetch_sub(1, Ordering::Relaxed);
            self.dropped_blocks += 1;
            return;
        }
        if w.tx
            .send(WriterMsg::Data {
                key: self.key,
                bytes,
            })
            .is_err()
        {
            w.queued_blocks.fetch_sub(1, Ordering::Relaxed);
            self.dropped_blocks += 1;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // What one track has beyond the other ends in silence.
        let (c, h) = (self.caller.len(), self.heard.len());
        self.caller
            .extend(std::iter::repeat_n(0, h.saturating_sub(c)));
        self.heard
            .extend(std::iter::repeat_n(0, c.saturating_sub(h)));
        self.interleave();
        self.flush();
        let _ = writer().tx.send(WriterMsg::Finish {
            key: self.key,
            dropped_blocks: self.dropped_blocks,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn both_tracks_land_aligned_in_a_stereo_wav_whose_sizes_are_patched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/RE1.wav");
        let (tx, rx) = mpsc::channel();
        let spec = RecordingSpec {
            id: "RE1".into(),
            path: path.clone(),
            call_sid: "CA1".into(),
            account: "acct".into(),
            status_callback: None,
        };
        let mut r = Recorder::start(spec.clone(), 8000, move |d| {
            let _ = tx.send(d);
        });
        for _ in 0..100 {
            r.caller(&[1000; 160]);
            r.heard(&[-1000; 160]);
        }
        // The caller 30 ms ahead at the end: padded, not lost.
        r.caller(&[7; 240]);
        drop(r);
        let done = rx.recv_timeout(Duration::from_secs(5)).expect("done");
        assert_eq!(done.error, None);
        assert_eq!(done.spec, spec);
        assert_eq!(done.dropped_blocks, 0);
        let frames = 100 * 160 + 240;
        assert_eq!(done.duration_ms, frames as u64 * 1000 / 8000);
        let wav = std::fs::read(&path).unwrap();
        assert_eq!(done.bytes, wav.len() as u64);
        assert_eq!(&wav[..44], &wav_header(8000, (frames * 4) as u32));
        let samples: Vec<i16> = wav[44..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(&samples[..4], &[1000, -1000, 1000, -1000]);
        assert_eq!(&samples[samples.len() - 2..], &[7, 0]);
    }

    #[test]
    fn a_directory_that_cannot_be_made_fails_the_recording_not_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let (tx, rx) = mpsc::channel();
        let spec = RecordingSpec {
            id: "RE2".into(),
            // A path under a regular file: no directory can be made.
            path: file.join("RE2.wav"),
            call_sid: "CA2".into(),
            account: "acct".into(),
            status_callback: None,
        };
        let mut r = Recorder::start(spec, 8000, move |d| {
            let _ = tx.send(d);
        });
        r.caller(&[1; 160]);
        r.heard(&[1; 160]);
        drop(r);
        let done = rx.recv_timeout(Duration::from_secs(5)).expect("done");
        assert!(done.error.is_some());
        assert_eq!(done.bytes, 0);
    }
}
