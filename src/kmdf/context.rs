//! Typed WDF object contexts: what `WDF_DECLARE_CONTEXT_TYPE` (wdfobject.h)
//! does in C, as the samples' `wdf_object_context` module does it in Rust: a
//! static `WDF_OBJECT_CONTEXT_TYPE_INFO` per type, and a getter over
//! `WdfObjectGetTypedContextWorker`. WDF zero-fills context memory, so every
//! context type here is valid all-zero.

use super::Engine;
use crate::device::PendKey;
use core::sync::atomic::AtomicU8;
use wdk_sys::{
    call_unsafe_wdf_function_binding, _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, ULONG,
    WDFOBJECT, WDF_OBJECT_ATTRIBUTES, WDF_OBJECT_CONTEXT_TYPE_INFO,
};

/// `sizeof(T)` as the `Size` member of a WDF structure (`WDF_STRUCTURE_SIZE`).
pub const fn wdf_size<T>() -> ULONG {
    let size = core::mem::size_of::<T>();
    assert!(size <= ULONG::MAX as usize);
    size as ULONG
}

/// Attributes with a context type, inheriting execution level and
/// synchronisation scope (`WDF_OBJECT_ATTRIBUTES_INIT_CONTEXT_TYPE`).
pub fn attributes_with(info: *const WDF_OBJECT_CONTEXT_TYPE_INFO) -> WDF_OBJECT_ATTRIBUTES {
    WDF_OBJECT_ATTRIBUTES {
        Size: wdf_size::<WDF_OBJECT_ATTRIBUTES>(),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ContextTypeInfo: info,
        ..WDF_OBJECT_ATTRIBUTES::default()
    }
}

/// A context type's `WDF_OBJECT_CONTEXT_TYPE_INFO`.
#[repr(transparent)]
pub struct ContextTypeInfo(pub WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: the info is immutable after initialisation; WDF only reads it.
unsafe impl Sync for ContextTypeInfo {}

impl ContextTypeInfo {
    /// For `WDF_OBJECT_ATTRIBUTES::ContextTypeInfo`.
    pub const fn unique(&self) -> *const WDF_OBJECT_CONTEXT_TYPE_INFO {
        self.0.UniqueType
    }
}

macro_rules! context_type {
    ($ty:ident, $info:ident, $get:ident) => {
        #[link_section = ".data"]
        pub static $info: ContextTypeInfo = ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
            Size: wdf_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
            ContextName: concat!(stringify!($ty), "\0").as_ptr().cast(),
            ContextSize: core::mem::size_of::<$ty>(),
            UniqueType: core::ptr::addr_of!($info).cast(),
            EvtDriverGetUniqueContextType: None,
        });

        /// The object's context of this type.
        ///
        /// # Safety
        /// `handle` is a live WDF object created with this context type.
        pub unsafe fn $get(handle: WDFOBJECT) -> *mut $ty {
            // SAFETY: the caller guarantees a live object carrying this context.
            unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfObjectGetTypedContextWorker,
                    handle,
                    $info.unique()
                )
            }
            .cast()
        }
    };
}

/// The device object's context: the engine, owned from device creation to
/// the device's cleanup callback.
pub struct DeviceContext {
    pub engine: *const Engine,
}
context_type!(DeviceContext, DEVICE_CONTEXT_INFO, device_context);

/// A file object's context: the engine's id for the handle.
pub struct FileContext {
    pub id: u64,
}
context_type!(FileContext, FILE_CONTEXT_INFO, file_context);

/// A request's context: where the engine pended it (for the cancel routine)
/// and the claims of the two parties that may complete it after a cancel.
pub struct RequestContext {
    pub key: PendKey,
    pub claims: AtomicU8,
}
context_type!(RequestContext, REQUEST_CONTEXT_INFO, request_context);

/// A work item's context: the engine's routine and its argument.
pub struct WorkItemContext {
    pub run: Option<unsafe fn(*const ())>,
    pub arg: *const (),
}
context_type!(WorkItemContext, WORK_ITEM_CONTEXT_INFO, work_item_context);
