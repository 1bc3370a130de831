//! The record of what ksspi declares, for the header conformance check.
//!
//! Every `#[repr(C)]` structure, constant and FFI function in [`crate::sys`] is
//! declared through the macros below, which also record it here. The record is
//! turned into a C file of `_Static_assert`s and redeclarations by
//! `c_conformance_source` (feature `std-tools`) and compiled against mingw-w64's
//! `sspi.h` / `schannel.h` / `winerror.h` by `scripts/abi-check.sh`, so nothing
//! can be declared without being checked.

/// How a Rust type is spelled in C, for prototype redeclarations.
pub trait CType {
    /// The C spelling (for pointers, the pointee's spelling followed by `*`).
    const C: &'static str;
}

/// The size, alignment and field offsets of one `#[repr(C)]` structure.
#[derive(Debug)]
pub struct StructLayout {
    /// The C type name (a typedef from the headers).
    pub c_name: &'static str,
    /// `size_of` the Rust type.
    pub size: usize,
    /// `align_of` the Rust type.
    pub align: usize,
    /// C field name and Rust offset, for every field.
    pub fields: &'static [(&'static str, usize)],
}

/// One constant: its C name and value.
#[derive(Debug, Clone, Copy)]
pub struct Constant {
    /// The macro name in the header.
    pub c_name: &'static str,
    /// The value, widened.
    pub value: i128,
}

/// One FFI function as ksspi declares it.
#[derive(Debug)]
pub struct Prototype {
    /// The exported name.
    pub name: &'static str,
    /// The header the declaration mirrors.
    pub header: &'static str,
    /// The C return type.
    pub ret: &'static str,
    /// The C parameter types, in order.
    pub params: &'static [&'static str],
}

macro_rules! c_types {
    ($($t:ty => $c:literal),* $(,)?) => {
        $(impl CType for $t { const C: &'static str = $c; })*
    };
}

// On the Windows targets `unsigned __LONG32` is `unsigned long` (LLP64).
c_types! {
    () => "void",
    u8 => "unsigned char",
    u16 => "unsigned short",
    u32 => "unsigned long",
    i32 => "long",
    usize => "ULONG_PTR",
    core::ffi::c_void => "void",
}

/// `T*` in C for `*mut T`, spelled with the pointee's C name.
pub struct Ptr<T: ?Sized>(core::marker::PhantomData<T>);

impl<T: CType + ?Sized> CType for *mut T {
    const C: &'static str = <Ptr<T> as PtrName>::NAME;
}

impl<T: CType + ?Sized> CType for *const T {
    const C: &'static str = <Ptr<T> as PtrName>::NAME;
}

/// Pointer spellings are built at compile time from the pointee's name.
pub trait PtrName {
    /// `"<pointee>*"`.
    const NAME: &'static str;
}

impl<T: CType + ?Sized> PtrName for Ptr<T> {
    const NAME: &'static str = concat_ptr(T::C);
}

/// `"name"` -> `"name*"`, in a const context, into a static buffer per call site.
const fn concat_ptr(name: &'static str) -> &'static str {
    // The pointee names are short type names; a table of the pointer forms keeps
    // this `const` without allocation.
    match name.as_bytes() {
        b"void" => "void*",
        b"unsigned long" => "unsigned long*",
        b"long" => "long*",
        b"unsigned short" => "unsigned short*",
        b"SecHandle" => "SecHandle*",
        b"SecBufferDesc" => "SecBufferDesc*",
        b"SecBuffer" => "SecBuffer*",
        b"TimeStamp" => "TimeStamp*",
        b"UNICODE_STRING" => "UNICODE_STRING*",
        b"SspiAsyncContext" => "SspiAsyncContext*",
        b"SecurityFunctionTableW" => "SecurityFunctionTableW*",
        b"void*" => "void**",
        _ => panic!("add the pointer spelling of this C type to concat_ptr"),
    }
}

/// Declare `#[repr(C)]` structures under their header names and record their layouts.
macro_rules! abi_structs {
    ($registry:ident: $(
        $(#[$m:meta])*
        pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident: $ty:ty,)* }
    )*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            #[allow(non_snake_case, non_camel_case_types)]
            #[derive(Clone, Copy, Debug)]
            pub struct $name { $($(#[$fm])* pub $field: $ty,)* }

            impl $crate::sys::abi::CType for $name {
                const C: &'static str = stringify!($name);
            }
        )*

        /// The layouts of the structures declared in this module.
        pub const $registry: &[$crate::sys::abi::StructLayout] = &[$(
            $crate::sys::abi::StructLayout {
                c_name: stringify!($name),
                size: core::mem::size_of::<$name>(),
                align: core::mem::align_of::<$name>(),
                fields: &[$((stringify!($field), core::mem::offset_of!($name, $field))),*],
            },
        )*];
    };
}

/// Declare constants under their header names and record their values.
macro_rules! abi_consts {
    ($registry:ident: $($(#[$m:meta])* $name:ident: $ty:ty = $value:expr;)*) => {
        $($(#[$m])* pub const $name: $ty = $value;)*

        /// The constants declared in this module.
        pub const $registry: &[$crate::sys::abi::Constant] = &[$(
            $crate::sys::abi::Constant { c_name: stringify!($name), value: $name as i128 },
        )*];
    };
}

/// Declare FFI functions imported from ksecdd (Windows, feature `ksecdd`)
/// and record their prototypes (everywhere, so the conformance check runs on any host).
macro_rules! abi_fns {
    ($registry:ident, $header:literal: $(
        $(#[$m:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;
    )*) => {
        #[cfg(all(windows, feature = "ksecdd"))]
        #[link(name = "ksecdd")]
        #[allow(non_snake_case, clippy::too_many_arguments)]
        extern "system" {
            $($(#[$m])* pub fn $name($($arg: $ty),*) $(-> $ret)?;)*
        }

        /// The prototypes declared in this module.
        pub const $registry: &[$crate::sys::abi::Prototype] = &[$(
            $crate::sys::abi::Prototype {
                name: stringify!($name),
                header: $header,
                ret: abi_fns!(@ret $($ret)?),
                params: &[$(<$ty as $crate::sys::abi::CType>::C),*],
            },
        )*];
    };
    (@ret) => { "void" };
    (@ret $ret:ty) => { <$ret as $crate::sys::abi::CType>::C };
}

pub(crate) use {abi_consts, abi_fns, abi_structs};

/// Everything recorded, by kind.
pub fn structs() -> impl Iterator<Item = &'static StructLayout> {
    [
        super::types::SSPI_STRUCTS,
        super::schannel::SCHANNEL_STRUCTS,
    ]
    .into_iter()
    .flatten()
}

/// Every constant recorded, including the status codes.
pub fn constants() -> impl Iterator<Item = Constant> {
    let statuses = crate::SecStatus::ALL.iter().map(|(name, s)| Constant {
        c_name: name,
        value: s.0 as i128,
    });
    [
        super::types::SSPI_CONSTANTS,
        super::schannel::SCHANNEL_CONSTANTS,
    ]
    .into_iter()
    .flatten()
    .copied()
    .chain(statuses)
}

/// Every FFI prototype recorded.
pub fn prototypes() -> impl Iterator<Item = &'static Prototype> {
    super::ffi::PROTOTYPES.iter()
}

/// A function pointer type's C signature, for checking ksspi's callback and
/// function-table types against the header typedefs.
pub trait CFnPtr {
    /// The C return type.
    fn ret() -> &'static str;
    /// The C parameter types.
    fn params() -> &'static [&'static str];
}

macro_rules! c_fn_ptrs {
    ($(($($a:ident),*)),*) => {$(
        impl<R: CType, $($a: CType),*> CFnPtr for unsafe extern "system" fn($($a),*) -> R {
            fn ret() -> &'static str { R::C }
            fn params() -> &'static [&'static str] { &[$($a::C),*] }
        }
        impl<R: CType, $($a: CType),*> CFnPtr for Option<unsafe extern "system" fn($($a),*) -> R> {
            fn ret() -> &'static str { R::C }
            fn params() -> &'static [&'static str] { &[$($a::C),*] }
        }
    )*};
}

c_fn_ptrs!((A), (A, B), (A, B, C), (A, B, C, D), (A, B, C, D, E));

/// Functions ksspi looks up at run time instead of importing: their pointer
/// types are checked against the headers' prototypes.
pub const RESOLVED_AT_RUN_TIME: &[&str] = &["SspiAsyncContextRequiresNotify"];

/// The header typedef each of ksspi's function pointer types mirrors; a name
/// that is a function rather than a typedef (one ksspi resolves at run time
/// instead of importing) is compared with the type of a pointer to it.
pub fn fn_pointer_types() -> [(&'static str, &'static str, &'static [&'static str]); 8] {
    use super::types::*;
    fn entry<F: CFnPtr>(
        c_name: &'static str,
    ) -> (&'static str, &'static str, &'static [&'static str]) {
        (c_name, F::ret(), F::params())
    }
    [
        entry::<SspiAsyncNotifyCallback>("SspiAsyncNotifyCallback"),
        entry::<SecGetKeyFn>("SEC_GET_KEY_FN"),
        entry::<ApplyControlTokenFn>("APPLY_CONTROL_TOKEN_FN"),
        entry::<QueryContextAttributesFn>("QUERY_CONTEXT_ATTRIBUTES_FN_W"),
        entry::<FreeContextBufferFn>("FREE_CONTEXT_BUFFER_FN"),
        entry::<EncryptMessageFn>("ENCRYPT_MESSAGE_FN"),
        entry::<DecryptMessageFn>("DECRYPT_MESSAGE_FN"),
        entry::<SspiAsyncContextRequiresNotifyFn>("SspiAsyncContextRequiresNotify"),
    ]
}

/// A deliberate error to plant in the generated file, to prove the check bites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// No corruption: the file must compile.
    None,
    /// Shift the first field offset of the named structure by 8 bytes.
    Offset(&'static str),
    /// Add one to the named constant.
    Value(&'static str),
    /// Change the first parameter of the named function (or function pointer
    /// typedef) to `unsigned char`.
    Signature(&'static str),
}

/// The C translation unit that must compile against the public headers.
#[cfg(feature = "std-tools")]
pub fn c_conformance_source(corrupt: Corruption) -> std::string::String {
    use std::fmt::Write;
    let mut c = std::string::String::new();
    let _ = writeln!(c, "/* Generated by ksspi (sys::abi): do not edit. */");
    let _ = writeln!(
        c,
        "#define SECURITY_KERNEL 1\n#define SCHANNEL_USE_BLACKLISTS 1"
    );
    let _ = writeln!(
        c,
        "#include <windows.h>\n#include <ntdef.h>\n#include <sspi.h>"
    );
    let _ = writeln!(
        c,
        "#include <schannel.h>\n#include <winerror.h>\n#include <stddef.h>\n"
    );
    let _ = writeln!(c, "_Static_assert(ISSP_MODE == 0, \"kernel-mode SSPI\");");
    for s in structs() {
        let _ = writeln!(c, "\n/* {} */", s.c_name);
        let _ = writeln!(
            c,
            "_Static_assert(sizeof({0}) == {1}, \"size of {0}\");",
            s.c_name, s.size
        );
        let _ = writeln!(
            c,
            "_Static_assert(_Alignof({0}) == {1}, \"align of {0}\");",
            s.c_name, s.align
        );
        for (i, (field, offset)) in s.fields.iter().enumerate() {
            let offset = match corrupt {
                Corruption::Offset(name) if name == s.c_name && i == 0 => offset + 8,
                _ => *offset,
            };
            let _ = writeln!(
                c,
                "_Static_assert(offsetof({0}, {1}) == {2}, \"offset of {0}.{1}\");",
                s.c_name, field, offset
            );
        }
    }
    let _ = writeln!(c);
    for k in constants() {
        let value = match corrupt {
            Corruption::Value(name) if name == k.c_name => k.value + 1,
            _ => k.value,
        };
        // Compare as the header's own type would: widen both sides to long long.
        let _ = writeln!(
            c,
            "_Static_assert((long long)({0}) == {1}LL, \"value of {0}\");",
            k.c_name, value
        );
    }
    let _ = writeln!(c);
    for p in prototypes() {
        let params: std::vec::Vec<&str> = p
            .params
            .iter()
            .enumerate()
            .map(|(i, t)| match corrupt {
                Corruption::Signature(name) if name == p.name && i == 0 => "unsigned char",
                _ => *t,
            })
            .collect();
        let params = if params.is_empty() {
            "void".into()
        } else {
            params.join(", ")
        };
        let _ = writeln!(c, "/* {} */ {} {}({});", p.header, p.ret, p.name, params);
    }
    let _ = writeln!(c);
    for (name, ret, params) in fn_pointer_types() {
        let params: std::vec::Vec<&str> = params
            .iter()
            .enumerate()
            .map(|(i, t)| match corrupt {
                Corruption::Signature(n) if n == name && i == 0 => "unsigned char",
                _ => *t,
            })
            .collect();
        let header_type = if RESOLVED_AT_RUN_TIME.contains(&name) {
            std::format!("__typeof__(&{name})")
        } else {
            name.into()
        };
        let _ = writeln!(
            c,
            "typedef {ret} (*ksspi_{name})({});\n_Static_assert(__builtin_types_compatible_p(ksspi_{name}, {header_type}), \"signature of {name}\");",
            params.join(", ")
        );
    }
    c
}
