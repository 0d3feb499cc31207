//! Sample-rate conversion between the rates calls and AI streams use
//! (8, 16, 24 kHz): a streaming polyphase FIR resampler for any rational
//! ratio, with a Blackman-windowed sinc low-pass at the lower Nyquist
//! frequency. Equal rates pass samples through untouched.

/// Filter taps per polyphase branch: 16 gives > 60 dB stopband for voice.
const TAPS_PER_PHASE: usize = 16;

#[derive(Debug, Clone)]
pub struct Resampler {
    up: usize,
    down: usize,
    /// `phases[p][j]` multiplies input `base - j` for output phase `p`.
    phases: Vec<[f32; TAPS_PER_PHASE]>,
    /// Input not yet consumed, preceded by the filter's history.
    input: Vec<f32>,
    /// Position of the next output in the upsampled domain, relative to
    /// `input[TAPS_PER_PHASE - 1]`.
    position: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Resampler {
        let g = gcd(from_hz as usize, to_hz as usize).max(1);
        let up = (to_hz as usize / g).max(1);
        let down = (from_hz as usize / g).max(1);
        let mut phases = vec![[0f32; TAPS_PER_PHASE]; up];
        if up != down {
            let n = TAPS_PER_PHASE * up;
            // Cutoff relative to the upsampled rate, a little under the
            // lower Nyquist frequency.
            let fc = 0.45 / up.max(down) as f64;
            let mid = (n - 1) as f64 / 2.0;
            for (i, tap) in (0..n).map(|i| {
                let x = i as f64 - mid;
                let sinc = if x == 0.0 {
                    2.0 * fc
                } else {
                    (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
                };
                let w = 2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64;
                let window = 0.42 - 0.5 * w.cos() + 0.08 * (2.0 * w).cos();
                (i, sinc * window * up as f64)
            }) {
                phases[i % up][i / up] = tap as f32;
            }
        }
        Resampler {
            up,
            down,
            phases,
            input: vec![0.0; TAPS_PER_PHASE - 1],
            position: 0,
        }
    }

    pub fn is_passthrough(&self) -> bool {
        self.up == self.down
    }

    /// Converts a chunk; state carries over to the next call.
    pub fn process(&mut self, samples: &[i16], out: &mut Vec<i16>) {
        if self.is_passthrough() {
            out.extend_from_slice(samples);
            return;
        }
        self.input.extend(samples.iter().map(|&s| f32::from(s)));
        let history = TAPS_PER_PHASE - 1;
        loop {
            let base = history + self.position / self.up;
            if base >= self.input.len() {
                break;
            }
            let taps = &self.phases[self.position % self.up];
            let mut acc = 0f32;
            for (j, &h) in taps.iter().enumerate() {
                acc += h * self.input[base - j];
            }
            out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
            self.position += self.down;
        }
        let consumed = (self.position / self.up).min(self.input.len() - history);
        self.input.drain(..consumed);
        self.position -= consumed * self.up;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                ((2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() * 10000.0)
                    as i16
            })
            .collect()
    }

    /// Amplitude of `hz` in `s` (single-bin DFT).
    fn level(s: &[i16], hz: f64, rate: u32) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &v) in s.iter().enumerate() {
            let w = 2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate);
            re += f64::from(v) * w.cos();
            im += f64::from(v) * w.sin();
        }
        2.0 * (re * re + im * im).sqrt() / s.len() as f64
    }

    fn run(from: u32, to: u32, input: &[i16], chunk: usize) -> Vec<i16> {
        let mut r = Resampler::new(from, to);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            r.process(c, &mut out);
        }
        out
    }

    #[test]
    fn equal_rates_pass_through() {
        let x = tone(440.0, 8000, 160);
        assert_eq!(run(8000, 8000, &x, 160), x);
    }

    #[test]
    fn output_length_follows_the_ratio_across_chunks() {
        for (from, to) in [
            (8000, 16000),
            (8000, 24000),
            (16000, 8000),
            (24000, 8000),
            (16000, 24000),
            (24000, 16000),
        ] {
            let n = from as usize; // one second
            let out = run(from, to, &vec![0; n], 160);
            assert!(
                out.len().abs_diff(to as usize) <= 1,
                "{from}->{to}: {} samples",
                out.len()
            );
        }
    }

    #[test]
    fn in_band_tone_keeps_its_level_and_frequency() {
        for (from, to) in [
            (8000, 16000),
            (8000, 24000),
            (16000, 8000),
            (24000, 8000),
            (24000, 16000),
        ] {
            let x = tone(1000.0, from, from as usize);
            let y = run(from, to, &x, 333);
            let settled = &y[100..];
            let a = level(settled, 1000.0, to);
            assert!((9000.0..11000.0).contains(&a), "{from}->{to}: level {a}");
            assert!(level(settled, 1500.0, to) < 300.0, "{from}->{to}: leakage");
        }
    }

    #[test]
    fn content_above_the_new_nyquist_is_filtered_out() {
        // 6 kHz at 16 kHz cannot exist at 8 kHz: it must not alias to 2 kHz.
        let x = tone(6000.0, 16000, 16000);
        let y = run(16000, 8000, &x, 320);
        assert!(level(&y[100..], 2000.0, 8000) < 200.0);
    }
}
