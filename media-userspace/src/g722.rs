//! ITU-T G.722 at 64 kbit/s: sub-band ADPCM of 16 kHz audio. The QMF
//! splits the signal into a low band (6-bit ADPCM) and a high band (2-bit
//! ADPCM); each octet carries one low and one high code for two input
//! samples. Block names follow the Recommendation (§3, §4 and §6).
//! One state per direction and call: the predictors run across packets.

/// Transmit/receive QMF coefficients (G.722 Table 11), in both orders.
const QMF_FWD: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];
const QMF_REV: [i32; 12] = [-11, 53, -156, 362, -805, 3876, 951, -210, 32, 12, -11, 3];

/// Low-band decision levels (QUANTL, Table 14), ×8 scale of DETL.
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
/// 6-bit low-band codes for negative and positive differences.
const ILN: [u8; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
const ILP: [u8; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
/// Inverse quantiser outputs: 4-bit (predictor feedback), 6-bit (low-band
/// output at 64 kbit/s) and 2-bit (high band).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// High-band codes for negative and positive differences.
const IHN: [u8; 3] = [0, 1, 0];
const IHP: [u8; 3] = [0, 3, 2];
/// Log-scale factor adaptation (LOGSCL, LOGSCH).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
const WH: [i32; 3] = [0, -214, 798];
const RH2: [usize; 4] = [2, 1, 2, 1];
/// Antilog table (SCALEL, SCALEH).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

fn sat16(v: i32) -> i32 {
    v.clamp(-32768, 32767)
}

fn sat15(v: i32) -> i32 {
    v.clamp(-16384, 16383)
}

fn sign_differs(a: i32, b: i32) -> bool {
    (a ^ b) & 0x8000 != 0
}

/// Adaptive predictor and scale factor of one sub-band.
#[derive(Debug, Clone)]
struct Band {
    /// Signal estimate SL/SH and its zero-section part SZ.
    s: i32,
    sz: i32,
    /// Last reconstructed signal, partial reconstructions, pole and zero
    /// coefficients, quantised differences.
    r: i32,
    p: [i32; 2],
    a: [i32; 2],
    b: [i32; 6],
    d: [i32; 7],
    /// Log scale factor and the scale factor itself.
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Band {
        Band {
            s: 0,
            sz: 0,
            r: 0,
            p: [0; 2],
            a: [0; 2],
            b: [0; 6],
            d: [0; 7],
            nb: 0,
            det,
        }
    }

    /// LOGSCL/LOGSCH then SCALEL/SCALEH: adapts the scale factor.
    fn scale(&mut self, w: i32, max_nb: i32, shift_base: i32) {
        self.nb = ((self.nb * 127) >> 7) + w;
        self.nb = self.nb.clamp(0, max_nb);
        let idx = ((self.nb >> 6) & 31) as usize;
        let shift = shift_base - (self.nb >> 11);
        let v = if shift < 0 {
            ILB[idx] << -shift
        } else {
            ILB[idx] >> shift
        };
        self.det = v << 2;
    }

    /// Block 4: RECONS, PARREC, UPPOL2, UPPOL1, FILTEP, UPZERO, FILTEZ,
    /// PREDIC — updates the predictor with quantised difference `dx`.
    fn adapt(&mut self, dx: i32) {
        let r = sat16(self.s + dx);
        let p = sat16(self.sz + dx);

        // UPPOL2
        let wd1 = sat16(self.a[0] << 2);
        let wd32 = if sign_differs(p, self.p[0]) {
            wd1
        } else {
            -wd1
        }
        .min(32767);
        let mut a2 = (if sign_differs(p, self.p[1]) {
            -128
        } else {
            128
        }) + (wd32 >> 7)
            + ((self.a[1] * 32512) >> 15);
        a2 = a2.clamp(-12288, 12288);

        // UPPOL1
        let wd1 = if sign_differs(p, self.p[0]) {
            -192
        } else {
            192
        };
        let mut a1 = sat16(wd1 + ((self.a[0] * 32640) >> 15));
        let limit = sat16(15360 - a2);
        a1 = a1.clamp(-limit, limit);

        // FILTEP
        let sp = sat16(((a1 * sat16(r + r)) >> 15) + ((a2 * sat16(self.r + self.r)) >> 15));
        self.r = r;
        self.a = [a1, a2];
        self.p = [p, self.p[0]];

        // UPZERO and FILTEZ
        let step = if dx == 0 { 0 } else { 128 };
        self.d[0] = dx;
        let mut sz = 0;
        for i in (0..6).rev() {
            let g = if sign_differs(self.d[i + 1], dx) {
                -step
            } else {
                step
            };
            self.b[i] = sat16(g + ((self.b[i] * 32640) >> 15));
            sz += (self.b[i] * sat16(self.d[i] + self.d[i])) >> 15;
            self.d[i + 1] = self.d[i];
        }
        self.sz = sat16(sz);

        // PREDIC
        self.s = sat16(sp + self.sz);
    }
}

/// Dot product of a 12-tap circular history with coefficients.
fn qmf(hist: &[i32; 12], start: usize, coeffs: &[i32; 12]) -> i32 {
    (0..12).map(|i| hist[(start + i) % 12] * coeffs[i]).sum()
}

#[derive(Debug, Clone)]
pub struct G722Encoder {
    low: Band,
    high: Band,
    x: [i32; 12],
    y: [i32; 12],
    ptr: usize,
}

impl Default for G722Encoder {
    fn default() -> Self {
        G722Encoder {
            low: Band::new(32),
            high: Band::new(8),
            x: [0; 12],
            y: [0; 12],
            ptr: 0,
        }
    }
}

impl G722Encoder {
    /// Encodes 16 kHz samples, two per octet (an odd last sample waits
    /// for nothing: it is paired with silence).
    pub fn encode(&mut self, samples: &[i16], out: &mut Vec<u8>) {
        for pair in samples.chunks(2) {
            let (a, b) = (i32::from(pair[0]), i32::from(*pair.get(1).unwrap_or(&0)));
            // Transmit QMF.
            self.x[self.ptr] = a;
            self.y[self.ptr] = b;
            self.ptr = (self.ptr + 1) % 12;
            let odd = qmf(&self.x, self.ptr, &QMF_FWD);
            let even = qmf(&self.y, self.ptr, &QMF_REV);
            let xlow = (even + odd) >> 14;
            let xhigh = (even - odd) >> 14;

            // Low band: SUBTRA, QUANTL, INVQAL, LOGSCL, SCALEL, block 4.
            let el = sat16(xlow - self.low.s);
            let mag = if el >= 0 { el } else { !el };
            let mut i = 1;
            while i < 30 && mag >= (Q6[i] * self.low.det) >> 12 {
                i += 1;
            }
            let ilow = if el < 0 { ILN[i] } else { ILP[i] };
            let ril = usize::from(ilow >> 2);
            let dlow = (self.low.det * QM4[ril]) >> 15;
            self.low.scale(WL[RL42[ril]], 18432, 8);
            self.low.adapt(dlow);

            // High band: SUBTRA, QUANTH, INVQAH, LOGSCH, SCALEH, block 4.
            let eh = sat16(xhigh - self.high.s);
            let mag = if eh >= 0 { eh } else { !eh };
            let mih = if mag >= (564 * self.high.det) >> 12 {
                2
            } else {
                1
            };
            let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
            let dhigh = (self.high.det * QM2[usize::from(ihigh)]) >> 15;
            self.high.scale(WH[RH2[usize::from(ihigh)]], 22528, 10);
            self.high.adapt(dhigh);

            out.push((ihigh << 6) | ilow);
        }
    }
}

#[derive(Debug, Clone)]
pub struct G722Decoder {
    low: Band,
    high: Band,
    x: [i32; 12],
    y: [i32; 12],
    ptr: usize,
}

impl Default for G722Decoder {
    fn default() -> Self {
        G722Decoder {
            low: Band::new(32),
            high: Band::new(8),
            x: [0; 12],
            y: [0; 12],
            ptr: 0,
        }
    }
}

impl G722Decoder {
    /// Decodes octets into 16 kHz samples, two per octet.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<i16>) {
        for &code in data {
            let ilow = usize::from(code & 0x3f);
            let ihigh = usize::from(code >> 6);

            // Low band: INVQBL (6-bit output), INVQAL (4-bit feedback).
            let rlow = sat15(self.low.s + ((self.low.det * QM6[ilow]) >> 15));
            let ril = ilow >> 2;
            let dlow = (self.low.det * QM4[ril]) >> 15;
            self.low.scale(WL[RL42[ril]], 18432, 8);
            self.low.adapt(dlow);

            // High band: INVQAH.
            let dhigh = (self.high.det * QM2[ihigh]) >> 15;
            let rhigh = sat15(dhigh + self.high.s);
            self.high.scale(WH[RH2[ihigh]], 22528, 10);
            self.high.adapt(dhigh);

            // Receive QMF.
            self.x[self.ptr] = sat16(rlow + rhigh);
            self.y[self.ptr] = sat16(rlow - rhigh);
            self.ptr = (self.ptr + 1) % 12;
            out.push(sat16(qmf(&self.y, self.ptr, &QMF_REV) >> 11) as i16);
            out.push(sat16(qmf(&self.x, self.ptr, &QMF_FWD) >> 11) as i16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| ((2.0 * std::f64::consts::PI * hz * i as f64 / 16000.0).sin() * amp) as i16)
            .collect()
    }

    /// Signal-to-noise ratio of `y` against `x` delayed by `delay`.
    fn snr_db(x: &[i16], y: &[i16], delay: usize) -> f64 {
        let (mut sig, mut noise) = (0.0, 0.0);
        for i in 2000..x.len() - delay {
            let a = f64::from(x[i]);
            let b = f64::from(y[i + delay]);
            sig += a * a;
            noise += (a - b) * (a - b);
        }
        10.0 * (sig / noise.max(1e-9)).log10()
    }

    fn round_trip(x: &[i16]) -> (Vec<u8>, Vec<i16>) {
        let mut enc = G722Encoder::default();
        let mut dec = G722Decoder::default();
        let mut bytes = Vec::new();
        let mut y = Vec::new();
        // 20 ms packets: state carries across them.
        for chunk in x.chunks(320) {
            let start = bytes.len();
            enc.encode(chunk, &mut bytes);
            dec.decode(&bytes[start..], &mut y);
        }
        (bytes, y)
    }

    /// The QMF pair delays the signal by 22 samples (23 taps, less one).
    fn best_delay(x: &[i16], y: &[i16]) -> (usize, f64) {
        (0..40)
            .map(|d| (d, snr_db(x, y, d)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
    }

    #[test]
    fn one_octet_per_two_samples() {
        let (bytes, y) = round_trip(&tone(1000.0, 3200, 8000.0));
        assert_eq!(bytes.len(), 1600, "64 kbit/s");
        assert_eq!(y.len(), 3200);
    }

    #[test]
    fn low_band_speech_tone_survives_with_high_snr() {
        for hz in [300.0, 1000.0, 3000.0] {
            let x = tone(hz, 16000, 8000.0);
            let (_, y) = round_trip(&x);
            let (_, snr) = best_delay(&x, &y);
            assert!(snr > 20.0, "{hz} Hz: SNR {snr:.1} dB");
        }
        // Three unrelated tones pin the delay down.
        let a = tone(310.0, 16000, 3000.0);
        let b = tone(1130.0, 16000, 3000.0);
        let c = tone(2470.0, 16000, 2000.0);
        let x: Vec<i16> = (0..16000).map(|i| a[i] + b[i] + c[i]).collect();
        let (_, y) = round_trip(&x);
        let (delay, snr) = best_delay(&x, &y);
        assert_eq!(delay, 22);
        assert!(snr > 20.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn wideband_content_above_4khz_is_carried() {
        // G.711 cannot carry 6 kHz at all; G.722's high band does.
        let x = tone(6000.0, 16000, 6000.0);
        let (_, y) = round_trip(&x);
        let (_, snr) = best_delay(&x, &y);
        assert!(snr > 8.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn silence_stays_silent_and_loud_input_does_not_overflow() {
        let (_, y) = round_trip(&[0; 3200]);
        assert!(y.iter().all(|&s| s.abs() < 16), "{:?}", &y[..20]);
        let square: Vec<i16> = (0..16000)
            .map(|i| {
                if (i / 20) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let (_, y) = round_trip(&square);
        assert_eq!(y.len(), square.len());
    }

    #[test]
    fn any_octet_stream_decodes() {
        let mut dec = G722Decoder::default();
        let mut y = Vec::new();
        let data: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        dec.decode(&data, &mut y);
        assert_eq!(y.len(), 8192);
    }
}
