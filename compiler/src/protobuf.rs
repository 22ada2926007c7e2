//! A protobuf wire-format reader: varints, fixed 32/64-bit values and length-delimited
//! fields, read from untrusted bytes with every length checked. Only what ONNX uses
//! (no groups).

/// Why bytes are not a valid protobuf message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{message}: truncated at byte {offset}")]
    Truncated { message: &'static str, offset: usize },
    #[error("{message}: varint longer than 10 bytes at byte {offset}")]
    VarintTooLong { message: &'static str, offset: usize },
    #[error(
        "{message}: field {field} uses wire type {wire_type}, which protobuf does not define (or ONNX never uses)"
    )]
    BadWireType { message: &'static str, field: u64, wire_type: u64 },
    #[error("{message}: field number 0 at byte {offset}")]
    FieldZero { message: &'static str, offset: usize },
    #[error("{message}: field {field} ({name}) should be {expected}, has wire type {wire_type}")]
    WrongType { message: &'static str, field: u64, name: &'static str, expected: &'static str, wire_type: u8 },
    #[error("{message}: field {field} ({name}) is not valid UTF-8")]
    NotUtf8 { message: &'static str, field: u64, name: &'static str },
    #[error("{message}: packed field {field} ({name}) is {len} bytes, not a multiple of {width}")]
    PackedLength { message: &'static str, field: u64, name: &'static str, len: usize, width: usize },
    #[error("{message}: nested deeper than {} levels", MAX_DEPTH)]
    TooDeep { message: &'static str },
}

/// Deepest message nesting accepted (ONNX graphs nest inside attributes).
pub const MAX_DEPTH: usize = 64;

/// One field's value as it sits on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl Value<'_> {
    fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => 0,
            Value::Fixed64(_) => 1,
            Value::Bytes(_) => 2,
            Value::Fixed32(_) => 5,
        }
    }
}

/// Iterates the fields of one message.
pub struct Reader<'a> {
    message: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// `message` names the message in errors.
    pub fn new(message: &'static str, bytes: &'a [u8]) -> Reader<'a> {
        Reader { message, bytes, at: 0 }
    }

    pub fn message(&self) -> &'static str {
        self.message
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let start = self.at;
        let mut value = 0u64;
        for shift in 0..10 {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(WireError::Truncated { message: self.message, offset: self.at });
            };
            self.at += 1;
            value |= u64::from(b & 0x7F) << (7 * shift);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintTooLong { message: self.message, offset: start })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else { return Err(WireError::Truncated { message: self.message, offset: self.at }) };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// The next field: its number and value; `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, WireError> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let offset = self.at;
        let key = self.varint()?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return Err(WireError::FieldZero { message: self.message, offset });
        }
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            _ => return Err(WireError::BadWireType { message: self.message, field, wire_type }),
        };
        Ok(Some((field, value)))
    }

    fn wrong(&self, field: u64, name: &'static str, expected: &'static str, v: &Value) -> WireError {
        WireError::WrongType { message: self.message, field, name, expected, wire_type: v.wire_type() }
    }

    /// A varint field (int32, int64, enum, bool).
    pub fn int(&self, field: u64, name: &'static str, v: Value) -> Result<i64, WireError> {
        match v {
            Value::Varint(x) => Ok(x as i64),
            other => Err(self.wrong(field, name, "a varint", &other)),
        }
    }

    pub fn float(&self, field: u64, name: &'static str, v: Value) -> Result<f32, WireError> {
        match v {
            Value::Fixed32(x) => Ok(f32::from_bits(x)),
            other => Err(self.wrong(field, name, "a 32-bit float", &other)),
        }
    }

    pub fn bytes(&self, field: u64, name: &'static str, v: Value<'a>) -> Result<&'a [u8], WireError> {
        match v {
            Value::Bytes(b) => Ok(b),
            other => Err(self.wrong(field, name, "length-delimited", &other)),
        }
    }

    pub fn string(&self, field: u64, name: &'static str, v: Value<'a>) -> Result<String, WireError> {
        let b = self.bytes(field, name, v)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::NotUtf8 { message: self.message, field, name })
    }

    /// A repeated integer field, packed or not: appends to `out`.
    pub fn ints(&self, field: u64, name: &'static str, v: Value, out: &mut Vec<i64>) -> Result<(), WireError> {
        match v {
            Value::Varint(x) => out.push(x as i64),
            Value::Bytes(b) => {
                let mut r = Reader::new(self.message, b);
                while r.at < b.len() {
                    out.push(r.varint()? as i64);
                }
            }
            other => return Err(self.wrong(field, name, "varints", &other)),
        }
        Ok(())
    }

    /// A repeated float field, packed or not: appends to `out`.
    pub fn floats(&self, field: u64, name: &'static str, v: Value, out: &mut Vec<f32>) -> Result<(), WireError> {
        match v {
            Value::Fixed32(x) => out.push(f32::from_bits(x)),
            Value::Bytes(b) => {
                if b.len() % 4 != 0 {
                    return Err(WireError::PackedLength { message: self.message, field, name, len: b.len(), width: 4 });
                }
                out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            }
            other => return Err(self.wrong(field, name, "32-bit floats", &other)),
        }
        Ok(())
    }

    /// A repeated double field, packed or not: appends to `out`.
    pub fn doubles(&self, field: u64, name: &'static str, v: Value, out: &mut Vec<f64>) -> Result<(), WireError> {
        match v {
            Value::Fixed64(x) => out.push(f64::from_bits(x)),
            Value::Bytes(b) => {
                if b.len() % 8 != 0 {
                    return Err(WireError::PackedLength { message: self.message, field, name, len: b.len(), width: 8 });
                }
                out.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))));
            }
            other => return Err(self.wrong(field, name, "64-bit floats", &other)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_fixed_and_length_delimited_fields_decode() {
        // field 1 varint 300, field 2 fixed32 1.5f, field 3 bytes "hi", field 4 fixed64 7
        let mut b = vec![0x08, 0xAC, 0x02, 0x15];
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&[0x1A, 2, b'h', b'i', 0x21]);
        b.extend_from_slice(&7u64.to_le_bytes());
        let mut r = Reader::new("Test", &b);
        assert_eq!(r.next_field().unwrap(), Some((1, Value::Varint(300))));
        assert_eq!(r.next_field().unwrap(), Some((2, Value::Fixed32(1.5f32.to_bits()))));
        assert_eq!(r.next_field().unwrap(), Some((3, Value::Bytes(b"hi"))));
        assert_eq!(r.next_field().unwrap(), Some((4, Value::Fixed64(7))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn malformed_input_is_named() {
        assert!(matches!(Reader::new("M", &[0x08]).next_field(), Err(WireError::Truncated { .. })));
        assert!(matches!(Reader::new("M", &[0x0B]).next_field(), Err(WireError::BadWireType { wire_type: 3, .. })));
        assert!(matches!(Reader::new("M", &[0x00]).next_field(), Err(WireError::FieldZero { .. })));
        assert!(matches!(Reader::new("M", &[0x0A, 0x05, 1]).next_field(), Err(WireError::Truncated { .. })));
        let long = [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert!(matches!(Reader::new("M", &long).next_field(), Err(WireError::VarintTooLong { .. })));
    }
}
