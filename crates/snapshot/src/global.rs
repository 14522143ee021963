//! Values of wasm globals.

use std::fmt;

/// The value type of a wasm global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GlobalType {
    /// `i32`
    I32 = 0,
    /// `i64`
    I64 = 1,
    /// `f32`
    F32 = 2,
    /// `f64`
    F64 = 3,
    /// `v128`
    V128 = 4,
}

impl GlobalType {
    /// The type from its tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            0 => GlobalType::I32,
            1 => GlobalType::I64,
            2 => GlobalType::F32,
            3 => GlobalType::F64,
            4 => GlobalType::V128,
            _ => return None,
        })
    }

    /// The wasm name of the type.
    pub fn name(self) -> &'static str {
        match self {
            GlobalType::I32 => "i32",
            GlobalType::I64 => "i64",
            GlobalType::F32 => "f32",
            GlobalType::F64 => "f64",
            GlobalType::V128 => "v128",
        }
    }
}

impl fmt::Display for GlobalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The value of a wasm global. Floats are kept as bits, so NaNs compare and hash exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GlobalValue {
    /// `i32`
    I32(i32),
    /// `i64`
    I64(i64),
    /// `f32`, as bits
    F32(u32),
    /// `f64`, as bits
    F64(u64),
    /// `v128`
    V128(u128),
}

impl GlobalValue {
    /// The value's type.
    pub fn ty(&self) -> GlobalType {
        match self {
            GlobalValue::I32(_) => GlobalType::I32,
            GlobalValue::I64(_) => GlobalType::I64,
            GlobalValue::F32(_) => GlobalType::F32,
            GlobalValue::F64(_) => GlobalType::F64,
            GlobalValue::V128(_) => GlobalType::V128,
        }
    }

    /// The raw bits, zero-extended to 128 (the layout wasmer keeps globals in).
    pub fn to_bits(&self) -> u128 {
        match *self {
            GlobalValue::I32(v) => v as u32 as u128,
            GlobalValue::I64(v) => v as u64 as u128,
            GlobalValue::F32(v) => v as u128,
            GlobalValue::F64(v) => v as u128,
            GlobalValue::V128(v) => v,
        }
    }

    /// A value of type `ty` from raw bits (higher bits are ignored).
    pub fn from_bits(ty: GlobalType, bits: u128) -> Self {
        match ty {
            GlobalType::I32 => GlobalValue::I32(bits as u32 as i32),
            GlobalType::I64 => GlobalValue::I64(bits as u64 as i64),
            GlobalType::F32 => GlobalValue::F32(bits as u32),
            GlobalType::F64 => GlobalValue::F64(bits as u64),
            GlobalType::V128 => GlobalValue::V128(bits),
        }
    }
}

impl fmt::Display for GlobalValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GlobalValue::I32(v) => write!(f, "i32 {v}"),
            GlobalValue::I64(v) => write!(f, "i64 {v}"),
            GlobalValue::F32(v) => write!(f, "f32 {}", f32::from_bits(v)),
            GlobalValue::F64(v) => write!(f, "f64 {}", f64::from_bits(v)),
            GlobalValue::V128(v) => write!(f, "v128 0x{v:032x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        for v in [
            GlobalValue::I32(-5),
            GlobalValue::I64(i64::MIN),
            GlobalValue::F32(f32::NAN.to_bits()),
            GlobalValue::F64((-0.0f64).to_bits()),
            GlobalValue::V128(u128::MAX - 3),
        ] {
            assert_eq!(GlobalValue::from_bits(v.ty(), v.to_bits()), v);
            assert_eq!(GlobalType::from_tag(v.ty() as u8), Some(v.ty()));
        }
    }
}
