//! A pickle virtual machine (protocols 0 to 5) that builds a [`Value`] tree without importing
//! or calling anything.
//!
//! Mirrors CPython's `Lib/pickle.py` `_Unpickler` (opcode semantics, the MARK meta-stack, the
//! memo, POP popping a mark when the frame is empty) and the opcode table of
//! `Lib/pickletools.py`. Out-of-band buffers (NEXT_BUFFER) and the extension registry
//! (EXT1/2/4) are reported as unsupported opcodes.
//!
//! Objects live in an arena while the stream runs so that the memo shares them: a dict that is
//! memoized and then filled by SETITEMS, or a dtype that is memoized before BUILD sets its
//! byte order, is seen complete wherever BINGET refers to it later. At STOP the arena is turned
//! into an owned tree: a node used once is moved (no copy of large byte strings), a node used
//! several times is cloned, within limits that turn self-references and exponential sharing
//! into errors instead of a stack overflow or an out-of-memory.

use crate::value::{Object, Value};
use crate::PickleError;
use std::collections::HashMap;

/// Deepest nesting accepted when building the tree (also what stops self-references).
const MAX_DEPTH: usize = 1000;

type NodeId = usize;

#[derive(Debug)]
enum Node {
    Leaf(Value),
    Tuple(Vec<NodeId>),
    List(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
    Set(Vec<NodeId>),
    Object(ObjectNode),
    PersistentId(NodeId),
    /// A node already moved into the output tree.
    Taken,
}

#[derive(Debug)]
struct ObjectNode {
    callable: NodeId,
    args: NodeId,
    kwargs: Option<NodeId>,
    state: Option<NodeId>,
    dict_items: Vec<(NodeId, NodeId)>,
    list_items: Vec<NodeId>,
}

/// Unpickles a whole stream (bytes after STOP are ignored, as `pickle.loads` does).
/// `source` names the file in error messages.
pub fn unpickle(data: &[u8], source: &str) -> Result<Value, PickleError> {
    unpickle_prefix(data, source, 0).map(|(value, _)| value)
}

/// Unpickles one pickle at the start of `data` and returns it with the number of bytes it took
/// (for formats that store several pickles back to back). `base_offset` is added to byte
/// positions in error messages (the pickle's offset in its file).
pub fn unpickle_prefix(
    data: &[u8],
    source: &str,
    base_offset: usize,
) -> Result<(Value, usize), PickleError> {
    let mut vm = Machine {
        data,
        pos: 0,
        op_pos: 0,
        op: 0,
        source,
        base: base_offset,
        nodes: Vec::new(),
        refs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = vm.run()?;
    vm.refs[root] += 1;
    let value = vm.materialize(root)?;
    Ok((value, vm.pos))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the current opcode starts, for error messages.
    op_pos: usize,
    op: u8,
    source: &'a str,
    base: usize,
    nodes: Vec<Node>,
    /// How many containers (or the root) hold each node: 1 means it can be moved out.
    refs: Vec<u32>,
    stack: Vec<NodeId>,
    /// Stack heights at each MARK (the meta-stack of pickle.py).
    marks: Vec<usize>,
    memo: HashMap<u64, NodeId>,
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x98 => "READONLY_BUFFER",
        _ => "opcode",
    }
}

impl<'a> Machine<'a> {
    // ---- errors -------------------------------------------------------------------------

    fn malformed(&self, msg: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            file: self.source.to_string(),
            pos: self.base + self.op_pos,
            msg: format!("{}: {}", opcode_name(self.op), msg.into()),
        }
    }

    fn truncated(&self) -> PickleError {
        PickleError::Truncated {
            file: self.source.to_string(),
            pos: self.base + self.op_pos,
            what: opcode_name(self.op),
        }
    }

    // ---- reading the stream -------------------------------------------------------------

    fn take(&mut self, n: u64) -> Result<&'a [u8], PickleError> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err(self.truncated());
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.data[start..self.pos])
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        Ok(self
            .take(N as u64)?
            .try_into()
            .expect("take returns N bytes"))
    }

    fn read_u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn read_u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn read_u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A signed 4-byte length (BINSTRING, LONG4); negative is malformed.
    fn read_len_i32(&mut self) -> Result<u64, PickleError> {
        let n = i32::from_le_bytes(self.take_array()?);
        u64::try_from(n).map_err(|_| self.malformed(format!("negative length {n}")))
    }

    /// A text line without its `\n` (and a trailing `\r`).
    fn read_line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.truncated());
        };
        self.pos += end + 1;
        let line = &rest[..end];
        Ok(line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn read_line_str(&mut self) -> Result<&'a str, PickleError> {
        let line = self.read_line()?;
        std::str::from_utf8(line).map_err(|_| self.malformed("argument line is not UTF-8"))
    }

    fn read_line_u64(&mut self) -> Result<u64, PickleError> {
        let line = self.read_line_str()?;
        line.trim()
            .parse()
            .map_err(|_| self.malformed(format!("bad memo index {line:?}")))
    }

    // ---- the stack ----------------------------------------------------------------------

    fn new_node(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.refs.push(0);
        self.nodes.len() - 1
    }

    fn push_node(&mut self, node: Node) {
        let id = self.new_node(node);
        self.stack.push(id);
    }

    fn push_leaf(&mut self, value: Value) {
        self.push_node(Node::Leaf(value));
    }

    /// Lowest stack index the current MARK frame may touch.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    fn pop_mark(&mut self) -> Result<Vec<NodeId>, PickleError> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.malformed("no MARK on the stack"));
        };
        Ok(self.stack.split_off(mark))
    }

    fn hold(&mut self, id: NodeId) -> NodeId {
        self.refs[id] += 1;
        id
    }

    fn hold_all(&mut self, ids: &[NodeId]) {
        for &id in ids {
            self.refs[id] += 1;
        }
    }

    fn pairs(&mut self, items: Vec<NodeId>) -> Result<Vec<(NodeId, NodeId)>, PickleError> {
        if items.len() % 2 == 1 {
            return Err(self.malformed("odd number of items for key/value pairs"));
        }
        self.hold_all(&items);
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    fn leaf_str(&self, id: NodeId) -> Option<&str> {
        match &self.nodes[id] {
            Node::Leaf(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    fn memo_get(&self, key: u64) -> Result<NodeId, PickleError> {
        self.memo
            .get(&key)
            .copied()
            .ok_or_else(|| self.malformed(format!("memo key {key} not found")))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    // ---- the interpreter ------------------------------------------------------------------

    /// Runs opcodes until STOP; returns the node STOP popped.
    fn run(&mut self) -> Result<NodeId, PickleError> {
        loop {
            self.op_pos = self.pos;
            self.op = 0;
            if self.pos >= self.data.len() {
                return Err(PickleError::Truncated {
                    file: self.source.to_string(),
                    pos: self.base + self.pos,
                    what: "next opcode (no STOP)",
                });
            }
            self.op = self.data[self.pos];
            self.pos += 1;
            match self.op {
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                0x80 => {
                    let proto = self.read_u8()?;
                    if proto > 5 {
                        return Err(self.malformed(format!("unsupported protocol {proto}")));
                    }
                }
                0x95 => {
                    // Frames only group opcodes for buffered reading; the content follows.
                    let len = self.read_u64()?;
                    if len > (self.data.len() - self.pos) as u64 {
                        return Err(self.truncated());
                    }
                }
                0x98 => {
                    self.top()?;
                }
                b'N' => self.push_leaf(Value::None),
                0x88 => self.push_leaf(Value::Bool(true)),
                0x89 => self.push_leaf(Value::Bool(false)),
                b'I' => {
                    let line = self.read_line_str()?;
                    let value = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => parse_decimal_int(line)
                            .ok_or_else(|| self.malformed(format!("bad int {line:?}")))?,
                    };
                    self.push_leaf(value);
                }
                b'L' => {
                    let line = self.read_line_str()?;
                    let digits = line.strip_suffix('L').unwrap_or(line);
                    let value = parse_decimal_int(digits)
                        .ok_or_else(|| self.malformed(format!("bad long {line:?}")))?;
                    self.push_leaf(value);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push_leaf(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.read_u8()?;
                    self.push_leaf(Value::Int(v as i64));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push_leaf(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.read_u8()? as u64;
                    let bytes = self.take(n)?;
                    self.push_leaf(int_from_le_twos_complement(bytes));
                }
                0x8b => {
                    let n = self.read_len_i32()?;
                    let bytes = self.take(n)?;
                    self.push_leaf(int_from_le_twos_complement(bytes));
                }
                b'F' => {
                    let line = self.read_line_str()?;
                    let v: f64 = line
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed(format!("bad float {line:?}")))?;
                    self.push_leaf(Value::Float(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.push_leaf(Value::Float(v));
                }
                b'S' => {
                    let line = self.read_line()?;
                    let inner = match line {
                        [q, inner @ .., q2] if q == q2 && (*q == b'\'' || *q == b'"') => inner,
                        _ => return Err(self.malformed("STRING argument must be quoted")),
                    };
                    let bytes = escape_decode(inner);
                    self.push_leaf(str_or_bytes(bytes));
                }
                b'T' => {
                    let n = self.read_len_i32()?;
                    let bytes = self.take(n)?.to_vec();
                    self.push_leaf(str_or_bytes(bytes));
                }
                b'U' => {
                    let n = self.read_u8()? as u64;
                    let bytes = self.take(n)?.to_vec();
                    self.push_leaf(str_or_bytes(bytes));
                }
                b'V' => {
                    let line = self.read_line()?;
                    let s = raw_unicode_escape_decode(line)
                        .ok_or_else(|| self.malformed("bad \\u escape"))?;
                    self.push_leaf(Value::String(s));
                }
                b'X' => {
                    let n = self.read_u32()? as u64;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.push_leaf(Value::String(s));
                }
                0x8c => {
                    let n = self.read_u8()? as u64;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.push_leaf(Value::String(s));
                }
                0x8d => {
                    let n = self.read_u64()?;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.push_leaf(Value::String(s));
                }
                b'B' => {
                    let n = self.read_u32()? as u64;
                    let bytes = self.take(n)?.to_vec();
                    self.push_leaf(Value::Bytes(bytes));
                }
                b'C' => {
                    let n = self.read_u8()? as u64;
                    let bytes = self.take(n)?.to_vec();
                    self.push_leaf(Value::Bytes(bytes));
                }
                0x8e | 0x96 => {
                    let n = self.read_u64()?;
                    let bytes = self.take(n)?.to_vec();
                    self.push_leaf(Value::Bytes(bytes));
                }
                b')' => self.push_node(Node::Tuple(Vec::new())),
                0x85..=0x87 => {
                    let n = (self.op - 0x84) as usize;
                    if self.stack.len() < self.floor() + n {
                        return Err(self.malformed("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.hold_all(&items);
                    self.push_node(Node::Tuple(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.hold_all(&items);
                    self.push_node(Node::Tuple(items));
                }
                b']' => self.push_node(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.hold_all(&items);
                    self.push_node(Node::List(items));
                }
                b'}' => self.push_node(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_node(Node::Dict(pairs));
                }
                0x8f => self.push_node(Node::Set(Vec::new())),
                0x91 => {
                    let items = self.pop_mark()?;
                    self.hold_all(&items);
                    self.push_node(Node::Set(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    let target = self.top()?;
                    self.append(target, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.append(target, items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.set_items(target, items)?;
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.hold_all(&items);
                    match &mut self.nodes[target] {
                        Node::Set(set) => set.extend(items),
                        _ => return Err(self.malformed("ADDITEMS target is not a set")),
                    }
                }
                b'c' => {
                    let module = self.read_line_str()?.to_string();
                    let name = self.read_line_str()?.to_string();
                    self.push_leaf(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.leaf_str(module), self.leaf_str(name))
                    else {
                        return Err(self.malformed("module and name must be strings"));
                    };
                    let global = Value::Global {
                        module: module.to_string(),
                        name: name.to_string(),
                    };
                    self.push_leaf(global);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.reduce(callable, args, None);
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.reduce(class, args, None);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.reduce(class, args, Some(kwargs));
                }
                b'i' => {
                    let module = self.read_line_str()?.to_string();
                    let name = self.read_line_str()?.to_string();
                    let items = self.pop_mark()?;
                    let class = self.new_node(Node::Leaf(Value::Global { module, name }));
                    self.hold_all(&items);
                    let args = self.new_node(Node::Tuple(items));
                    self.reduce(class, args, None);
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(self.malformed("OBJ without a class"));
                    }
                    let class = items.remove(0);
                    self.hold_all(&items);
                    let args = self.new_node(Node::Tuple(items));
                    self.reduce(class, args, None);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(target, state)?;
                }
                b'P' => {
                    let line = self.read_line_str()?.to_string();
                    let pid = self.new_node(Node::Leaf(Value::String(line)));
                    self.refs[pid] += 1;
                    self.push_node(Node::PersistentId(pid));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let pid = self.hold(pid);
                    self.push_node(Node::PersistentId(pid));
                }
                b'p' => {
                    let key = self.read_line_u64()?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = self.read_u8()? as u64;
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = self.read_u32()? as u64;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'g' => {
                    let key = self.read_line_u64()?;
                    let id = self.memo_get(key)?;
                    self.stack.push(id);
                }
                b'h' => {
                    let key = self.read_u8()? as u64;
                    let id = self.memo_get(key)?;
                    self.stack.push(id);
                }
                b'j' => {
                    let key = self.read_u32()? as u64;
                    let id = self.memo_get(key)?;
                    self.stack.push(id);
                }
                op => {
                    return Err(PickleError::UnsupportedOpcode {
                        file: self.source.to_string(),
                        opcode: op,
                        pos: self.base + self.op_pos,
                    })
                }
            }
        }
    }

    fn append(&mut self, target: NodeId, items: Vec<NodeId>) -> Result<(), PickleError> {
        self.hold_all(&items);
        match &mut self.nodes[target] {
            Node::List(list) => list.extend(items),
            Node::Object(obj) => obj.list_items.extend(items),
            _ => return Err(self.malformed("target is not a list")),
        }
        Ok(())
    }

    fn set_items(&mut self, target: NodeId, items: Vec<NodeId>) -> Result<(), PickleError> {
        let pairs = self.pairs(items)?;
        match &mut self.nodes[target] {
            Node::Dict(dict) => dict.extend(pairs),
            Node::Object(obj) => obj.dict_items.extend(pairs),
            _ => return Err(self.malformed("target is not a dict")),
        }
        Ok(())
    }

    fn build(&mut self, target: NodeId, state: NodeId) -> Result<(), PickleError> {
        let state = self.hold(state);
        match &mut self.nodes[target] {
            Node::Object(obj) => {
                // A second BUILD replaces the state, as a second __setstate__ would.
                obj.state = Some(state);
            }
            // Instance attributes of a dict subclass (OrderedDict's `_metadata` on a
            // state_dict) are not part of its items; they are dropped.
            Node::Dict(_) => {}
            _ => return Err(self.malformed("BUILD target is not an object")),
        }
        Ok(())
    }

    /// REDUCE / NEWOBJ: a few builtins that only rebuild plain data become that data (so an
    /// OrderedDict is a dict and protocol-2 bytes are bytes); anything else is an Object.
    fn reduce(&mut self, callable: NodeId, args: NodeId, kwargs: Option<NodeId>) {
        if kwargs.is_none() {
            if let Some(node) = self.reduce_builtin(callable, args) {
                self.push_node(node);
                return;
            }
        }
        self.refs[callable] += 1;
        self.refs[args] += 1;
        if let Some(kw) = kwargs {
            self.refs[kw] += 1;
        }
        self.push_node(Node::Object(ObjectNode {
            callable,
            args,
            kwargs,
            state: None,
            dict_items: Vec::new(),
            list_items: Vec::new(),
        }));
    }

    fn reduce_builtin(&mut self, callable: NodeId, args: NodeId) -> Option<Node> {
        let Node::Leaf(Value::Global { module, name }) = &self.nodes[callable] else {
            return None;
        };
        let Node::Tuple(args) = &self.nodes[args] else {
            return None;
        };
        let args = args.clone();
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
                match args.as_slice() {
                    [] => Some(Node::Dict(Vec::new())),
                    [items] => {
                        let items = match &self.nodes[*items] {
                            Node::List(v) | Node::Tuple(v) => v.clone(),
                            _ => return None,
                        };
                        let mut pairs = Vec::with_capacity(items.len());
                        for item in items {
                            match &self.nodes[item] {
                                Node::List(kv) | Node::Tuple(kv) if kv.len() == 2 => {
                                    pairs.push((kv[0], kv[1]))
                                }
                                _ => return None,
                            }
                        }
                        for &(k, v) in &pairs {
                            self.refs[k] += 1;
                            self.refs[v] += 1;
                        }
                        Some(Node::Dict(pairs))
                    }
                    _ => None,
                }
            }
            // Protocol 2 pickles bytes as _codecs.encode(latin-1 text, "latin1").
            ("_codecs", "encode") => {
                let [text, encoding] = args.as_slice() else {
                    return None;
                };
                let bytes = encode_text(self.leaf_str(*text)?, self.leaf_str(*encoding)?)?;
                Some(Node::Leaf(Value::Bytes(bytes)))
            }
            ("builtins" | "__builtin__", "bytearray" | "bytes") => match args.as_slice() {
                [] => Some(Node::Leaf(Value::Bytes(Vec::new()))),
                [data] => match &self.nodes[*data] {
                    Node::Leaf(Value::Bytes(b)) => Some(Node::Leaf(Value::Bytes(b.clone()))),
                    _ => None,
                },
                [text, encoding] => {
                    let bytes = encode_text(self.leaf_str(*text)?, self.leaf_str(*encoding)?)?;
                    Some(Node::Leaf(Value::Bytes(bytes)))
                }
                _ => None,
            },
            ("builtins" | "__builtin__", "set" | "frozenset") => match args.as_slice() {
                [] => Some(Node::Set(Vec::new())),
                [items] => {
                    let items = match &self.nodes[*items] {
                        Node::List(v) | Node::Tuple(v) => v.clone(),
                        _ => return None,
                    };
                    self.hold_all(&items);
                    Some(Node::Set(items))
                }
                _ => None,
            },
            _ => None,
        }
    }

    // ---- building the owned tree ------------------------------------------------------------

    fn tree_error(&self, msg: &str) -> PickleError {
        PickleError::Malformed {
            file: self.source.to_string(),
            pos: self.base + self.pos,
            msg: msg.to_string(),
        }
    }

    /// Turns the arena below `root` into an owned tree, depth first with an explicit task
    /// stack (no recursion, so hostile nesting cannot overflow the thread's stack). A node
    /// whose last holder is being visited is moved; a node still held elsewhere is cloned,
    /// and so is everything below it, without touching reference counts, so that later moves
    /// stay valid.
    fn materialize(&mut self, root: NodeId) -> Result<Value, PickleError> {
        let value_limit = 16 * self.nodes.len() + 1_000_000;
        let byte_limit = 4 * self.data.len() + (64 << 20);
        let mut built_values = 0usize;
        let mut cloned_bytes = 0usize;
        let mut tasks = vec![Task::Visit {
            id: root,
            depth: 0,
            cloning: false,
        }];
        let mut values: Vec<Value> = Vec::new();
        while let Some(task) = tasks.pop() {
            let (id, depth, cloning) = match task {
                Task::Build(shape) => {
                    let value = assemble(shape, &mut values);
                    values.push(value);
                    continue;
                }
                Task::Visit { id, depth, cloning } => (id, depth, cloning),
            };
            if depth > MAX_DEPTH {
                return Err(self.tree_error(
                    "nesting deeper than 1000 levels (or an object that contains itself)",
                ));
            }
            built_values += 1;
            if built_values > value_limit {
                return Err(self.tree_error("shared references expand to too many values"));
            }
            let cloning = cloning || {
                self.refs[id] = self.refs[id].saturating_sub(1);
                self.refs[id] > 0
            };
            let node = if cloning {
                match &self.nodes[id] {
                    Node::Leaf(v) => {
                        cloned_bytes += match v {
                            Value::Bytes(b) | Value::BigInt(b) => b.len(),
                            Value::String(s) => s.len(),
                            _ => 0,
                        };
                        if cloned_bytes > byte_limit {
                            return Err(
                                self.tree_error("shared references expand to too many bytes")
                            );
                        }
                        values.push(v.clone());
                        continue;
                    }
                    other => other.clone_structure(),
                }
            } else {
                std::mem::replace(&mut self.nodes[id], Node::Taken)
            };
            let (shape, children) = match node {
                Node::Leaf(v) => {
                    values.push(v);
                    continue;
                }
                Node::Taken => return Err(self.tree_error("object used after it was moved")),
                Node::Tuple(ids) => (Shape::Tuple(ids.len()), ids),
                Node::List(ids) => (Shape::List(ids.len()), ids),
                Node::Set(ids) => (Shape::Set(ids.len()), ids),
                Node::Dict(pairs) => (
                    Shape::Dict(pairs.len()),
                    pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                ),
                Node::PersistentId(pid) => (Shape::PersistentId, vec![pid]),
                Node::Object(obj) => {
                    let mut ids = vec![obj.callable, obj.args];
                    ids.extend(obj.kwargs);
                    ids.extend(obj.state);
                    ids.extend(obj.dict_items.iter().flat_map(|&(k, v)| [k, v]));
                    ids.extend(&obj.list_items);
                    let shape = Shape::Object {
                        kwargs: obj.kwargs.is_some(),
                        state: obj.state.is_some(),
                        dict_items: obj.dict_items.len(),
                        list_items: obj.list_items.len(),
                    };
                    (shape, ids)
                }
            };
            tasks.push(Task::Build(shape));
            // Reversed so that the first child is visited (and pushed to `values`) first.
            tasks.extend(children.into_iter().rev().map(|id| Task::Visit {
                id,
                depth: depth + 1,
                cloning,
            }));
        }
        Ok(values.pop().expect("the root task leaves one value"))
    }
}

enum Task {
    Visit {
        id: NodeId,
        depth: usize,
        /// True below a node that is cloned rather than moved.
        cloning: bool,
    },
    Build(Shape),
}

/// What to assemble from the values the children of a node left on the value stack.
enum Shape {
    Tuple(usize),
    List(usize),
    Set(usize),
    Dict(usize),
    PersistentId,
    Object {
        kwargs: bool,
        state: bool,
        dict_items: usize,
        list_items: usize,
    },
}

impl Node {
    /// The node with its child ids, for a node that is cloned rather than moved.
    fn clone_structure(&self) -> Node {
        match self {
            Node::Leaf(v) => Node::Leaf(v.clone()),
            Node::Tuple(ids) => Node::Tuple(ids.clone()),
            Node::List(ids) => Node::List(ids.clone()),
            Node::Set(ids) => Node::Set(ids.clone()),
            Node::Dict(pairs) => Node::Dict(pairs.clone()),
            Node::PersistentId(pid) => Node::PersistentId(*pid),
            Node::Object(obj) => Node::Object(ObjectNode {
                callable: obj.callable,
                args: obj.args,
                kwargs: obj.kwargs,
                state: obj.state,
                dict_items: obj.dict_items.clone(),
                list_items: obj.list_items.clone(),
            }),
            Node::Taken => Node::Taken,
        }
    }
}

fn into_pairs(flat: Vec<Value>) -> Vec<(Value, Value)> {
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push((k, v));
    }
    pairs
}

/// Pops a node's children off the value stack (pushed in order) and builds the node.
fn assemble(shape: Shape, values: &mut Vec<Value>) -> Value {
    let mut take = |n: usize| values.split_off(values.len() - n);
    match shape {
        Shape::Tuple(n) => Value::Tuple(take(n)),
        Shape::List(n) => Value::List(take(n)),
        Shape::Set(n) => Value::Set(take(n)),
        Shape::Dict(n) => Value::Dict(into_pairs(take(2 * n))),
        Shape::PersistentId => Value::PersistentId(Box::new(take(1).remove(0))),
        Shape::Object {
            kwargs,
            state,
            dict_items,
            list_items,
        } => {
            let n = 2 + kwargs as usize + state as usize + 2 * dict_items + list_items;
            let mut parts = take(n).into_iter();
            let callable = parts.next().expect("callable");
            let args = parts.next().expect("args");
            let kwargs = if kwargs {
                match parts.next().expect("kwargs") {
                    Value::Dict(pairs) => pairs,
                    other => vec![(Value::None, other)],
                }
            } else {
                Vec::new()
            };
            let state = if state { parts.next() } else { None };
            let dict_items = into_pairs(parts.by_ref().take(2 * dict_items).collect());
            let list_items = parts.collect();
            Value::Object(Box::new(Object {
                callable,
                args,
                kwargs,
                state,
                dict_items,
                list_items,
            }))
        }
    }
}

/// Python 2 `str` / protocol-0 STRING: text when it is valid UTF-8, bytes otherwise.
fn str_or_bytes(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(s) => Value::String(s),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// `text.encode(encoding)` for the encodings pickles use to carry bytes.
fn encode_text(text: &str, encoding: &str) -> Option<Vec<u8>> {
    match encoding.to_ascii_lowercase().as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect(),
        "utf-8" | "utf8" | "ascii" => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

/// An int from little-endian two's complement bytes (LONG1 / LONG4): i64 when it fits.
fn int_from_le_twos_complement(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    // Bytes beyond the 8th must only repeat the sign for the value to fit an i64.
    let fits = bytes.len() <= 8
        || (bytes[8..].iter().all(|&b| b == fill) && ((bytes[7] & 0x80 != 0) == negative));
    if fits {
        let mut le = [fill; 8];
        let n = bytes.len().min(8);
        le[..n].copy_from_slice(&bytes[..n]);
        Value::Int(i64::from_le_bytes(le))
    } else {
        Value::BigInt(bytes.to_vec())
    }
}

/// A decimal int (INT / LONG text): i64 when it fits, two's complement bytes otherwise.
fn parse_decimal_int(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(v) = text.parse::<i64>() {
        return Some(Value::Int(v));
    }
    let (negative, digits) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Magnitude in base 2^32 limbs, little-endian.
    let mut limbs: Vec<u32> = vec![0];
    for &d in digits {
        let mut carry = (d - b'0') as u64;
        for limb in limbs.iter_mut() {
            let v = (*limb as u64) * 10 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    bytes.push(0); // room for the sign bit
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in bytes.iter_mut() {
            let (v, c) = (!*b).overflowing_add(carry as u8);
            *b = v;
            carry = c;
        }
    }
    // Shortest form, as Python's encode_long writes.
    while bytes.len() > 1 {
        let last = bytes[bytes.len() - 1];
        let prev = bytes[bytes.len() - 2];
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            bytes.pop();
        } else {
            break;
        }
    }
    Some(int_from_le_twos_complement(&bytes))
}

/// `codecs.escape_decode`: the body of a Python bytes repr.
fn escape_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c != b'\\' || i + 1 >= input.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = input[i + 1];
        i += 2;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut n = 1;
                while n < 3 && i < input.len() && (b'0'..=b'7').contains(&input[i]) {
                    v = v * 8 + (input[i] - b'0') as u32;
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' if i + 2 <= input.len()
                && input[i].is_ascii_hexdigit()
                && input[i + 1].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&input[i..i + 2]).expect("ascii hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    out
}

/// `raw-unicode-escape` decoding (UNICODE): `\uXXXX` and `\UXXXXXXXX` escapes, every other
/// byte a Latin-1 code point. Lone surrogates become U+FFFD.
fn raw_unicode_escape_decode(input: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c == b'\\' && i + 1 < input.len() && (input[i + 1] == b'u' || input[i + 1] == b'U') {
            let n = if input[i + 1] == b'u' { 4 } else { 8 };
            let hex = input.get(i + 2..i + 2 + n)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let code = u32::from_str_radix(hex, 16).ok()?;
            out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            i += 2 + n;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(data: &[u8]) -> Value {
        unpickle(data, "test.pkl").unwrap()
    }

    #[test]
    fn ints_of_every_encoding() {
        assert_eq!(load(b"I42\n."), Value::Int(42));
        assert_eq!(load(b"I01\n."), Value::Bool(true));
        assert_eq!(load(b"L-7L\n."), Value::Int(-7));
        assert_eq!(load(b"\x80\x02J\xff\xff\xff\xff."), Value::Int(-1));
        assert_eq!(load(b"\x80\x02\x8a\x02\x00\x80."), Value::Int(-32768));
        assert_eq!(load(b"\x80\x02\x8a\x00."), Value::Int(0));
        // 2**64 as LONG1 and as decimal text agree.
        let big = Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            load(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."),
            big
        );
        assert_eq!(load(b"L18446744073709551616L\n."), big);
        // -(2**64)
        let neg = parse_decimal_int("-18446744073709551616").unwrap();
        assert_eq!(neg, Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xff]));
        // i64::MIN through LONG1 with a redundant sign byte still fits.
        assert_eq!(
            int_from_le_twos_complement(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]),
            Value::Int(i64::MIN)
        );
    }

    #[test]
    fn protocol0_strings() {
        assert_eq!(load(b"S'a\\nb\\x41\\''\n."), Value::String("a\nbA'".into()));
        assert_eq!(
            load(b"Vcaf\xe9 \\u20ac\n."),
            Value::String("caf\u{e9} \u{20ac}".into())
        );
        assert_eq!(load(b"S'\\xff'\n."), Value::Bytes(vec![0xff]));
    }

    #[test]
    fn memo_sees_later_mutation() {
        // EMPTY_DICT, BINPUT 0, then a list holding GET 0 twice, then SETITEM on the dict.
        let data = b"\x80\x02}q\x00(h\x00h\x00lq\x01h\x00K\x01K\x02s0.";
        // stack after: dict, list; SETITEM pops 2 ints and sets on `top`, which is the dict
        // pushed by the third BINGET. POP drops it, STOP returns the list.
        let v = load(data);
        let pairs = vec![(Value::Int(1), Value::Int(2))];
        assert_eq!(
            v,
            Value::List(vec![Value::Dict(pairs.clone()), Value::Dict(pairs)])
        );
    }

    #[test]
    fn self_reference_is_an_error() {
        // L = []; L.append(L)
        let err = unpickle(b"\x80\x02]q\x00h\x00a.", "loop.pkl").unwrap_err();
        assert!(err.to_string().contains("contains itself"), "{err}");
    }

    #[test]
    fn errors_name_file_and_position() {
        let err = unpickle(b"\x80\x02\xff", "x.pkl").unwrap_err().to_string();
        assert_eq!(err, "x.pkl: pickle opcode 0xff at byte 2 not supported");
        let err = unpickle(b"\x80\x02X\x05\x00\x00\x00ab", "x.pkl")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncated") && err.contains("BINUNICODE"),
            "{err}"
        );
        let err = unpickle(b"\x80\x02a.", "x.pkl").unwrap_err().to_string();
        assert!(err.contains("stack underflow"), "{err}");
        // MARK hides what is below it.
        let err = unpickle(b"K\x01(0a.", "x.pkl").unwrap_err().to_string();
        assert!(err.contains("underflow"), "{err}");
    }

    #[test]
    fn reduce_builtins_become_data() {
        // collections.OrderedDict() then SETITEMS
        let data = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aK\x01u.";
        assert_eq!(
            load(data),
            Value::Dict(vec![(Value::String("a".into()), Value::Int(1))])
        );
        // _codecs.encode('\xff\x00', 'latin1')
        let data =
            b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00\xc3\xbf\x00X\x06\x00\x00\x00latin1\x86R.";
        assert_eq!(load(data), Value::Bytes(vec![0xff, 0x00]));
    }
}
