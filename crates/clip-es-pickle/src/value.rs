//! The tree of Python values an unpickled stream describes.
//!
//! Mirrors what `pickle.Unpickler` (CPython `Lib/pickle.py`) would build, except that nothing
//! is imported or called: a global stays a name, and a reduced / instantiated object keeps its
//! callable, arguments, BUILD state and the items SETITEMS / APPENDS added to it, so readers of
//! PyTorch and numpy pickles can interpret the few callables they know.

/// A Python value from a pickle.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int outside i64: little-endian two's complement bytes (as LONG1/LONG4 store them).
    BigInt(Vec<u8>),
    Float(f64),
    String(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// dict and collections.OrderedDict, pairs in insertion order.
    Dict(Vec<(Value, Value)>),
    /// set and frozenset, in pickled order.
    Set(Vec<Value>),
    /// A reference to a module attribute (`c` GLOBAL / STACK_GLOBAL), not resolved.
    Global {
        module: String,
        name: String,
    },
    /// An object produced by REDUCE / NEWOBJ / NEWOBJ_EX / INST / OBJ.
    Object(Box<Object>),
    /// A persistent id (PERSID / BINPERSID); PyTorch uses it for storages.
    PersistentId(Box<Value>),
}

/// An object built by calling `callable(*args, **kwargs)` in Python, then BUILD / SETITEMS /
/// APPENDS applied to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub callable: Value,
    pub args: Value,
    /// Keyword arguments (NEWOBJ_EX only; empty otherwise).
    pub kwargs: Vec<(Value, Value)>,
    /// The argument of BUILD (`__setstate__` or the instance `__dict__`), if any.
    pub state: Option<Value>,
    /// Pairs added by SETITEM(S) (dict subclasses).
    pub dict_items: Vec<(Value, Value)>,
    /// Items added by APPEND(S) (list subclasses).
    pub list_items: Vec<Value>,
}

impl Object {
    /// `(module, name)` when the callable is a global.
    pub fn callable_global(&self) -> Option<(&str, &str)> {
        self.callable.as_global()
    }

    /// The positional arguments when they are a tuple (or list), else an empty slice.
    pub fn args_seq(&self) -> &[Value] {
        self.args.as_seq().unwrap_or(&[])
    }
}

impl Value {
    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Global { .. } => "global",
            Value::Object(_) => "object",
            Value::PersistentId(_) => "persistent id",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An int (bools count, as in Python).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Int(0) => Some(false),
            Value::Int(1) => Some(true),
            _ => None,
        }
    }

    /// A float, or an int widened.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// Bytes, or the UTF-8 bytes of a string (Python 2 `str` pickles decode to either).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::String(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The pairs of a dict, or of a dict-like object that only received SETITEMS.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            Value::Object(o) if o.state.is_none() && !o.dict_items.is_empty() => {
                Some(&o.dict_items)
            }
            _ => None,
        }
    }

    /// The value of a string key in a dict.
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// `(module, name)` of a global.
    pub fn as_global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// True when this is an object whose callable is the global `module.name`.
    pub fn is_object_of(&self, module: &str, name: &str) -> bool {
        self.as_object().and_then(Object::callable_global) == Some((module, name))
    }
}
