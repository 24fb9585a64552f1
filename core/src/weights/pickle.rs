//! A pickle *reader* for `torch.save` checkpoints. It interprets the opcodes as data
//! and never calls anything: `GLOBAL` + `REDUCE` become inert records, except the
//! few constructors a state dict needs (`OrderedDict`, `_rebuild_tensor_v2`,
//! `_rebuild_parameter`), which are recognised by name.
//!
//! The pickle comes from a stranger, so the reader is bounded (docs/design.md §7):
//! containers are reference-counted, so `DUP` and memo gets share a value instead of
//! copying it (a pickle that doubles a list at every level stays linear in size);
//! every container records its nesting depth and nothing deeper than [`MAX_DEPTH`] is
//! built (no stack overflow when a value is compared or dropped); the stack and memo
//! can only grow by one entry per opcode, so they are bounded by the pickle's length.

use std::rc::Rc;

use super::dtype::DType;

/// The deepest nesting a state dict pickle may have. Real checkpoints nest about five
/// levels (`{"model": {name: _rebuild_tensor_v2((persistent_id(...), ...))}}`).
pub const MAX_DEPTH: usize = 64;

/// A tensor as pickled by PyTorch: a view into a storage of the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Key of the storage: the archive entry `<prefix>/data/<key>`.
    pub storage: String,
    pub dtype: DType,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A sequence of values shared by reference, with the nesting depth of its deepest item.
#[derive(Debug, Clone, PartialEq)]
pub struct Seq {
    pub items: Rc<Vec<Value>>,
    depth: usize,
}

impl Seq {
    fn new(items: Vec<Value>) -> R<Self> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(Self { items: Rc::new(items), depth })
    }
    /// Appends in place (copying only if the sequence is shared, as a memo snapshot is).
    fn extend(&mut self, more: Vec<Value>) -> R<()> {
        let depth = 1 + more.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        self.depth = self.depth.max(depth);
        Rc::make_mut(&mut self.items).extend(more);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Seq),
    List(Seq),
    /// Key/value pairs, flattened: `[k0, v0, k1, v1, ...]`.
    Dict(Seq),
    Global(Rc<str>, Rc<str>),
    /// `callable(*args)`, kept as data: `[callable, args]`.
    Call(Seq),
    PersistentId(Seq),
    Tensor(Rc<TensorRef>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(&v.items),
            _ => None,
        }
    }
    /// The `(key, value)` pairs of a dict.
    pub fn dict_pairs(&self) -> Option<impl Iterator<Item = (&Value, &Value)>> {
        match self {
            Value::Dict(d) => Some(d.items.chunks_exact(2).map(|kv| (&kv[0], &kv[1]))),
            _ => None,
        }
    }
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) | Value::Call(s) | Value::PersistentId(s) => s.depth,
            _ => 0,
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each open MARK (CPython's "metastack").
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
}

type R<T> = Result<T, String>;

impl<'a> Machine<'a> {
    fn byte(&mut self) -> R<u8> {
        let b = *self.data.get(self.pos).ok_or("unexpected end of pickle")?;
        self.pos += 1;
        Ok(b)
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("unexpected end of pickle")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32le(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> R<Rc<str>> {
        let start = self.pos;
        let n = self.data[start..].iter().position(|&b| b == b'\n').ok_or("unterminated line")?;
        self.pos = start + n + 1;
        std::str::from_utf8(&self.data[start..start + n]).map(Rc::from).map_err(|_| "non-UTF-8 name".into())
    }
    fn pop(&mut self) -> R<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("stack underflow below a MARK".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }
    fn top(&mut self) -> R<&mut Value> {
        self.stack.last_mut().ok_or_else(|| "stack underflow".into())
    }
    /// Pops everything above the last MARK.
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let m = self.marks.pop().ok_or("MARK not found")?;
        if m > self.stack.len() {
            return Err("stack underflow below a MARK".into());
        }
        Ok(self.stack.split_off(m))
    }
    fn text(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(std::str::from_utf8(b).map_err(|_| "invalid UTF-8 string")?.into()))
    }
    fn push_seq(&mut self, wrap: fn(Seq) -> Value, items: Vec<Value>) -> R<()> {
        let v = wrap(Seq::new(items)?);
        self.stack.push(v);
        Ok(())
    }
    /// Extends the container on top of the stack, which must be a `what`.
    fn extend_top(&mut self, what: &str, items: Vec<Value>) -> R<()> {
        match (what, self.top()?) {
            ("dict", Value::Dict(d)) | ("list", Value::List(d)) => d.extend(items),
            _ => Err(format!("adding items to a non-{what}")),
        }
    }

    fn run(mut self) -> R<Value> {
        loop {
            let op = self.byte()?;
            match op {
                0x80 => {
                    self.byte()?; // PROTO n
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'}' => self.push_seq(Value::Dict, Vec::new())?,
                b']' => self.push_seq(Value::List, Vec::new())?,
                b')' => self.push_seq(Value::Tuple, Vec::new())?,
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.byte()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
                }
                b'J' => {
                    let v = self.u32le()? as i32;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("LONG1 wider than 64 bits".into());
                    }
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n); // sign-extend
                    }
                    self.stack.push(Value::Int(v))
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack.push(Value::Float(f64::from_be_bytes(b.try_into().map_err(|_| "float")?)))
                }
                b'X' => {
                    let n = self.u32le()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                0x8c => {
                    let n = self.byte()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                0x8d => {
                    let b = self.take(8)?;
                    let n = usize::try_from(u64::from_le_bytes(b.try_into().map_err(|_| "len")?)).map_err(|_| "len")?;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                b'U' | b'C' | b'T' | b'B' => {
                    let n = if matches!(op, b'U' | b'C') { self.byte()? as usize } else { self.u32le()? as usize };
                    let b = self.take(n)?;
                    self.stack.push(if matches!(op, b'U' | b'T') {
                        Value::Str(String::from_utf8_lossy(b).into())
                    } else {
                        Value::Bytes(b.into())
                    })
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_seq(Value::Tuple, items)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_seq(Value::List, items)?
                }
                b'd' => {
                    let items = pairs(self.pop_mark()?)?;
                    self.push_seq(Value::Dict, items)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_seq(Value::Tuple, items)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = reduce(func, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    self.pop()?; // BUILD: object state (e.g. a state dict's `_metadata`) is not needed
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push_seq(Value::PersistentId, vec![pid])?
                }
                b'q' | b'r' | 0x94 => {
                    let i = match op {
                        b'q' => self.byte()? as u32,
                        b'r' => self.u32le()?,
                        _ => u32::try_from(self.memo.len()).map_err(|_| "memo too large")?,
                    };
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' | b'j' => {
                    let i = if op == b'h' { self.byte()? as u32 } else { self.u32le()? };
                    let v = self.memo.get(&i).cloned().ok_or_else(|| format!("memo {i} not found"))?;
                    self.stack.push(v)
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top("dict", vec![k, v])?
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    self.extend_top("dict", items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top("list", vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top("list", items)?
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v)
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {}", self.pos - 1)),
            }
        }
    }
}

/// Checks that dict items come in key/value pairs.
fn pairs(items: Vec<Value>) -> R<Vec<Value>> {
    if items.len() % 2 != 0 {
        return Err("odd number of dict items".into());
    }
    Ok(items)
}

/// `func(*args)` for the constructors a state dict uses; anything else stays inert.
fn reduce(func: Value, args: Value) -> R<Value> {
    let Value::Global(module, name) = &func else {
        return Ok(Value::Call(Seq::new(vec![func, args])?));
    };
    match (&**module, &**name) {
        ("collections", "OrderedDict") | ("builtins", "dict") => Ok(Value::Dict(Seq::new(Vec::new())?)),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => rebuild_tensor(&args),
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            args.items().and_then(|a| a.first().cloned()).ok_or_else(|| "bad _rebuild_parameter".into())
        }
        _ => Ok(Value::Call(Seq::new(vec![func, args])?)),
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, ...)` where
/// storage is the persistent id `('storage', torch.XStorage, key, location, numel)`.
fn rebuild_tensor(args: &Value) -> R<Value> {
    let a = args.items().ok_or("tensor args are not a tuple")?;
    let (Some(Value::PersistentId(pid)), Some(offset), Some(size), Some(stride)) = (a.first(), a.get(1), a.get(2), a.get(3))
    else {
        return Err("unexpected _rebuild_tensor arguments".into());
    };
    let p = pid.items.first().and_then(Value::items).ok_or("storage id is not a tuple")?;
    let dtype = match p.get(1) {
        Some(Value::Global(_, n)) => DType::from_torch_storage(n).ok_or_else(|| format!("unsupported storage {n}"))?,
        _ => return Err("storage type missing".into()),
    };
    let storage = match p.get(2) {
        Some(Value::Str(s)) => s.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        _ => return Err("storage key missing".into()),
    };
    let dims = |v: &Value| -> R<Vec<usize>> {
        v.items().ok_or("shape is not a tuple")?.iter().map(|d| d.as_usize().ok_or_else(|| "negative or non-integer dim".into())).collect()
    };
    let (shape, stride) = (dims(size)?, dims(stride)?);
    if shape.len() != stride.len() {
        return Err(format!("shape {shape:?} and stride {stride:?} differ in rank"));
    }
    Ok(Value::Tensor(Rc::new(TensorRef { storage, dtype, offset: offset.as_usize().ok_or("bad storage offset")?, shape, stride })))
}

/// Interprets a pickle stream and returns its top-level value.
pub fn parse(data: &[u8]) -> Result<Value, String> {
    Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: Default::default() }.run()
}
