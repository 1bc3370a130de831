//! The engine's [`Platform`] on Windows: `WDFWORKITEM`s for the PASSIVE_LEVEL
//! continuation, kernel spin locks (`KeAcquireSpinLockRaiseToDpc` /
//! `KeReleaseSpinLock`, which Driver Verifier tracks), the IRQL
//! (`KeGetCurrentIrql`, as wdk-sys's own `paged_code!` reads it) and the
//! interrupt-time clock. Nothing here touches CR8.

use super::context::{attributes_with, wdf_size, work_item_context, WORK_ITEM_CONTEXT_INFO};
use ksspi::engine::{Platform, SpinWord};
use ksspi::{Irql, SecStatus};
use wdk::nt_success;
use wdk_sys::{
    call_unsafe_wdf_function_binding,
    ntddk::{
        KeAcquireSpinLockRaiseToDpc, KeGetCurrentIrql, KeQueryInterruptTimePrecise,
        KeReleaseSpinLock,
    },
    WDFDEVICE, WDFOBJECT, WDFWORKITEM, WDF_OBJECT_ATTRIBUTES, WDF_WORKITEM_CONFIG,
};

/// Work items parented to the device; the IRQL and the clock.
#[derive(Clone, Copy)]
pub struct KmdfPlatform {
    device: WDFDEVICE,
}

// SAFETY: a WDFDEVICE handle may be used from any thread; the device outlives
// the engine (the engine is dropped in the device's cleanup callback).
unsafe impl Send for KmdfPlatform {}
// SAFETY: the platform is a copy of the WDFDEVICE handle and never changes
// it; WDF's calls on a device handle may be made from any thread at once.
unsafe impl Sync for KmdfPlatform {}

impl KmdfPlatform {
    /// The platform of `device`.
    pub fn new(device: WDFDEVICE) -> Self {
        KmdfPlatform { device }
    }
}

/// One `WDFWORKITEM`; deleted when the engine drops it.
pub struct WorkItem(WDFWORKITEM);

// SAFETY: WdfWorkItemEnqueue may be called from any thread at IRQL <=
// DISPATCH_LEVEL; the item is deleted only as `Drop` says.
unsafe impl Send for WorkItem {}
// SAFETY: `&WorkItem` only enqueues: WdfWorkItemEnqueue is callable from any
// thread at IRQL <= DISPATCH_LEVEL, and enqueuing an item already queued does
// nothing; deleting takes the owned item (`Drop`).
unsafe impl Sync for WorkItem {}

impl Drop for WorkItem {
    fn drop(&mut self) {
        // SAFETY: the handle is live and owned here, at IRQL <=
        // DISPATCH_LEVEL. Deleting a work item at PASSIVE_LEVEL flushes it:
        // FxWorkItem::Dispose waits for a running callback to return, unless
        // the deleting thread is that callback's (open-source WDF,
        // fxworkitem.cpp, FlushAndRundown); above PASSIVE the framework
        // defers the disposal to PASSIVE (work items have passive callbacks:
        // FxObject::ShouldDeferDisposeLocked). The engine never deletes a
        // queued item (the model stops a test that does), and holds no lock
        // a running item needs while it deletes one (docs/DESIGN.md, "Work
        // items").
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, self.0 as WDFOBJECT) };
    }
}

/// EVT_WDF_WORKITEM: run the engine's routine at PASSIVE_LEVEL.
extern "C" fn evt_work_item(item: WDFWORKITEM) {
    // SAFETY: WDF runs this callback only for the work items
    // `create_work_item` made, each with a WorkItemContext, and the item is
    // live while its callback runs.
    let ctx = unsafe { work_item_context(item as WDFOBJECT) };
    // SAFETY: the context lives as long as the item; it was written before the
    // item could first be queued and is only read from then on.
    let ctx = unsafe { &*ctx };
    if let Some(run) = ctx.run {
        // SAFETY: `run` and `arg` are what the engine registered, and it keeps
        // `arg` alive while the item is queued.
        unsafe { run(ctx.arg) };
    }
}

impl Platform for KmdfPlatform {
    type WorkItem = WorkItem;

    fn create_work_item(
        &self,
        run: unsafe fn(*const ()),
        arg: *const (),
    ) -> Result<WorkItem, SecStatus> {
        let mut config = WDF_WORKITEM_CONFIG {
            Size: wdf_size::<WDF_WORKITEM_CONFIG>(),
            EvtWorkItemFunc: Some(evt_work_item),
            AutomaticSerialization: 0,
        };
        let mut attributes = WDF_OBJECT_ATTRIBUTES {
            ParentObject: self.device as WDFOBJECT,
            ..attributes_with(WORK_ITEM_CONTEXT_INFO.unique())
        };
        let mut item: WDFWORKITEM = core::ptr::null_mut();
        // SAFETY: config and attributes outlive the call; the parent is the
        // live device object.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfWorkItemCreate,
                &raw mut config,
                &raw mut attributes,
                &raw mut item,
            )
        };
        if !nt_success(status) {
            return Err(SecStatus::SEC_E_INSUFFICIENT_MEMORY);
        }
        // SAFETY: WdfWorkItemCreate succeeded: `item` is a live work item,
        // created with `attributes`, which carry the WorkItemContext type.
        let ctx = unsafe { work_item_context(item as WDFOBJECT) };
        // SAFETY: the context lives as long as the item, which is not queued
        // yet and whose handle no one else has: nothing else reads the
        // context while this reference exists.
        let ctx = unsafe { &mut *ctx };
        ctx.run = Some(run);
        ctx.arg = arg;
        Ok(WorkItem(item))
    }

    fn queue_work_item(&self, item: &WorkItem) {
        // SAFETY: a live work item; callable at IRQL <= DISPATCH_LEVEL.
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemEnqueue, item.0) };
    }

    fn acquire_spin_lock(&self, word: &SpinWord) -> Irql {
        // SAFETY: `word` is a KSPIN_LOCK (a pointer-sized word, zero when
        // free) that lives as long as its lock; the caller is at IRQL <=
        // DISPATCH_LEVEL (Platform's contract; above it the kernel stops).
        Irql(unsafe { KeAcquireSpinLockRaiseToDpc(word.as_ptr().cast()) })
    }

    unsafe fn release_spin_lock(&self, word: &SpinWord, old: Irql) {
        // SAFETY: the caller holds `word`, taken by acquire_spin_lock, which
        // returned `old`.
        unsafe { KeReleaseSpinLock(word.as_ptr().cast(), old.0) };
    }

    fn now_us(&self) -> u64 {
        let mut qpc: u64 = 0;
        // SAFETY: callable at any IRQL; `qpc` receives the performance counter.
        unsafe { KeQueryInterruptTimePrecise(&raw mut qpc) / 10 }
    }
}

/// `KeGetCurrentIrql`, as wdk-sys binds it (its `paged_code!` macro calls
/// the same binding; mingw-w64's `libntoskrnl.a` lists the export).
pub fn current_irql() -> Irql {
    // SAFETY: callable at any IRQL; no arguments, no side effects.
    Irql(unsafe { KeGetCurrentIrql() })
}
