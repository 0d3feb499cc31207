//! G.711 companding (ITU-T G.711): μ-law (PCMU) and A-law (PCMA) between
//! one 8-bit code and one 16-bit linear sample. Pure functions, used by the
//! AI stream bridge to move audio between the call and the AI.

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Linear 16-bit sample → μ-law code.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment: position of the highest set bit above bit 7.
    let exponent = (15 - (s as u16).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// μ-law code → linear 16-bit sample.
pub fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let exponent = i32::from((c >> 4) & 0x07);
    let mantissa = i32::from(c & 0x0f);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if c & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear 16-bit sample → A-law code.
pub fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let s = i32::from(sample) >> 3;
    let (sign, mag) = if s >= 0 {
        (0xd5u8, s)
    } else {
        (0x55u8, -s - 1)
    };
    let mag = mag.min(0x0fff);
    let code = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let exponent = (31 - (mag as u32).leading_zeros() as i32 - 4).clamp(1, 7);
        let mantissa = (mag >> exponent) & 0x0f;
        ((exponent << 4) as u8) | mantissa as u8
    };
    code ^ sign
}

/// A-law code → linear 16-bit sample.
pub fn alaw_decode(code: u8) -> i16 {
    let c = code ^ 0x55;
    let exponent = i32::from((c >> 4) & 0x07);
    let mantissa = i32::from(c & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if c & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_reference_points() {
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x7f), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_reference_points() {
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xaa);
        assert_eq!(alaw_encode(i16::MIN), 0x2a);
    }

    /// Every code decodes to a sample that encodes back to the same code
    /// (μ-law's negative zero 0x7f maps to positive zero 0xff).
    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            let u = ulaw_encode(ulaw_decode(code));
            assert!(
                u == code || (code == 0x7f && u == 0xff),
                "μ-law {code:#04x} → {u:#04x}"
            );
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
    }

    /// Decoding is monotonic in the linear value and the quantisation
    /// error stays within half a step of each segment.
    #[test]
    fn encode_is_monotonic_and_close() {
        let mut last_u = i16::MIN;
        let mut last_a = i16::MIN;
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            assert!(u >= last_u && a >= last_a, "monotonic at {s}");
            last_u = u;
            last_a = a;
            let m = i32::from(s).abs();
            let err_u = (i32::from(u) - i32::from(s)).abs();
            let err_a = (i32::from(a) - i32::from(s)).abs();
            // At most half a quantisation step: μ-law steps are 1/16 of
            // the biased magnitude, A-law steps 1/16 of the magnitude (16
            // in the linear segment); beyond the largest code, the clip.
            let half_u = ((m + 132) / 32).max(4) + 1;
            let half_a = (m / 32).max(8) + 1;
            assert!(
                err_u <= half_u || m > 32124,
                "{s}: μ-law {u}, error {err_u}"
            );
            assert!(
                err_a <= half_a || m > 32256,
                "{s}: A-law {a}, error {err_a}"
            );
        }
    }
}
