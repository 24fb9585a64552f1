//! A pickle *reader* for `torch.save` checkpoints. It interprets the opcodes as data
//! and never calls anything: `GLOBAL` + `REDUCE` become inert records, except the
//! few constructors a state dict needs (`OrderedDict`, `_rebuild_tensor_v2`,
//! `_rebuild_parameter`), which are recognised by name.

use super::dtype::DType;

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

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// `callable(*args)`, kept as data.
    Call(Box<Value>, Box<Value>),
    PersistentId(Box<Value>),
    Tensor(TensorRef),
    Mark,
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
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
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
    fn line(&mut self) -> R<String> {
        let start = self.pos;
        let n = self.data[start..].iter().position(|&b| b == b'\n').ok_or("unterminated line")?;
        self.pos = start + n + 1;
        String::from_utf8(self.data[start..start + n].to_vec()).map_err(|_| "non-UTF-8 name".into())
    }
    fn pop(&mut self) -> R<Value> {
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }
    fn top(&mut self) -> R<&mut Value> {
        self.stack.last_mut().ok_or_else(|| "stack underflow".into())
    }
    /// Pops everything above the last MARK.
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let m = self.stack.iter().rposition(|v| *v == Value::Mark).ok_or("MARK not found")?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }
    fn text(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 string")?))
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
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'(' => self.stack.push(Value::Mark),
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
                b'U' | b'C' => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(if op == b'U' {
                        Value::Str(String::from_utf8_lossy(&b).into_owned())
                    } else {
                        Value::Bytes(b)
                    })
                }
                b'T' | b'B' => {
                    let n = self.u32le()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(if op == b'T' {
                        Value::Str(String::from_utf8_lossy(&b).into_owned())
                    } else {
                        Value::Bytes(b)
                    })
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(pairs(items)?))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
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
                    self.stack.push(Value::PersistentId(Box::new(pid)))
                }
                b'q' => {
                    let i = self.byte()? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32le()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
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
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err("SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(items),
                        _ => return Err("SETITEMS on a non-dict".into()),
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err("APPEND on a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("APPENDS on a non-list".into()),
                    }
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

fn pairs(items: Vec<Value>) -> R<Vec<(Value, Value)>> {
    if items.len() % 2 != 0 {
        return Err("odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// `func(*args)` for the constructors a state dict uses; anything else stays inert.
fn reduce(func: Value, args: Value) -> R<Value> {
    let Value::Global(module, name) = &func else {
        return Ok(Value::Call(Box::new(func), Box::new(args)));
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => rebuild_tensor(&args),
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            args.items().and_then(|a| a.first().cloned()).ok_or_else(|| "bad _rebuild_parameter".into())
        }
        _ => Ok(Value::Call(Box::new(func), Box::new(args))),
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
    let p = pid.items().ok_or("storage id is not a tuple")?;
    let dtype = match p.get(1) {
        Some(Value::Global(_, n)) => DType::from_torch_storage(n).ok_or_else(|| format!("unsupported storage {n}"))?,
        _ => return Err("storage type missing".into()),
    };
    let storage = match p.get(2) {
        Some(Value::Str(s)) => s.clone(),
        Some(Value::Int(i)) => i.to_string(),
        _ => return Err("storage key missing".into()),
    };
    let dims = |v: &Value| -> R<Vec<usize>> {
        v.items().ok_or("shape is not a tuple")?.iter().map(|d| d.as_usize().ok_or_else(|| "bad dim".into())).collect()
    };
    Ok(Value::Tensor(TensorRef {
        storage,
        dtype,
        offset: offset.as_usize().ok_or("bad storage offset")?,
        shape: dims(size)?,
        stride: dims(stride)?,
    }))
}

/// Interprets a pickle stream and returns its top-level value.
pub fn parse(data: &[u8]) -> Result<Value, String> {
    Machine { data, pos: 0, stack: Vec::new(), memo: Default::default() }.run()
}
