//! The engine's [`Platform`] on Windows: `WDFWORKITEM`s for the PASSIVE_LEVEL
//! continuation, the IRQL (CR8, as wdm.h's x64 inline functions do it) and
//! the interrupt-time clock.

use super::context::{attributes_with, wdf_size, work_item_context, WORK_ITEM_CONTEXT_INFO};
use ksspi::engine::Platform;
use ksspi::{Irql, SecStatus};
use wdk::nt_success;
use wdk_sys::{
    call_unsafe_wdf_function_binding, ntddk::KeQueryInterruptTimePrecise, WDFDEVICE, WDFOBJECT,
    WDFWORKITEM, WDF_OBJECT_ATTRIBUTES, WDF_WORKITEM_CONFIG,
};

/// Work items parented to the device; the IRQL and the clock.
#[derive(Clone, Copy)]
pub struct KmdfPlatform {
    device: WDFDEVICE,
}

// SAFETY: a WDFDEVICE handle may be used from any thread; the device outlives
// the engine (the engine is dropped in the device's cleanup callback).
unsafe impl Send for KmdfPlatform {}
// SAFETY: as above.
unsafe impl Sync for KmdfPlatform {}

impl KmdfPlatform {
    /// The platform of `device`.
    pub fn new(device: WDFDEVICE) -> Self {
        KmdfPlatform { device }
    }
}

/// One `WDFWORKITEM`; deleted when the engine drops it.
pub struct WorkItem(WDFWORKITEM);

// SAFETY: WdfWorkItemEnqueue and WdfObjectDelete may be called from any
// thread at IRQL <= DISPATCH_LEVEL.
unsafe impl Send for WorkItem {}
// SAFETY: as above.
unsafe impl Sync for WorkItem {}

impl Drop for WorkItem {
    fn drop(&mut self) {
        // SAFETY: the handle is live and owned here. The engine never drops a
        // queued item; it may drop one from inside its own callback, which is
        // where EVT_WDF_WORKITEM's documentation says to delete it.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, self.0 as WDFOBJECT) };
    }
}

/// EVT_WDF_WORKITEM: run the engine's routine at PASSIVE_LEVEL.
extern "C" fn evt_work_item(item: WDFWORKITEM) {
    // SAFETY: every work item is created with a WorkItemContext.
    let ctx = unsafe { &*work_item_context(item as WDFOBJECT) };
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
        // SAFETY: the item was just created with a WorkItemContext and is not
        // queued yet: nothing else reads the context.
        unsafe {
            let ctx = &mut *work_item_context(item as WDFOBJECT);
            ctx.run = Some(run);
            ctx.arg = arg;
        }
        Ok(WorkItem(item))
    }

    fn queue_work_item(&self, item: &WorkItem) {
        // SAFETY: a live work item; callable at IRQL <= DISPATCH_LEVEL.
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemEnqueue, item.0) };
    }

    fn raise_to_dispatch(&self) -> Irql {
        let old = current_irql();
        debug_assert!(old.0 <= Irql::DISPATCH.0);
        write_cr8(Irql::DISPATCH);
        old
    }

    fn lower_irql(&self, old: Irql) {
        write_cr8(old);
    }

    fn now_us(&self) -> u64 {
        let mut qpc: u64 = 0;
        // SAFETY: callable at any IRQL; `qpc` receives the performance counter.
        unsafe { KeQueryInterruptTimePrecise(&raw mut qpc) / 10 }
    }
}

/// `KeGetCurrentIrql` (wdm.h): on x64 a FORCEINLINE read of CR8.
pub fn current_irql() -> Irql {
    let cr8: u64;
    // SAFETY: reading CR8 is allowed at CPL 0, where a driver runs; no side
    // effects.
    unsafe {
        core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags))
    };
    Irql(cr8 as u8)
}

/// `KeRaiseIrql` / `KeLowerIrql` (wdm.h): on x64 FORCEINLINE writes of CR8.
fn write_cr8(irql: Irql) {
    let value = u64::from(irql.0);
    // SAFETY: at CPL 0, writing the task priority register is how the x64
    // kernel sets the IRQL; callers pair each raise with a lower to the old
    // level, as KeRaiseIrql/KeLowerIrql require.
    unsafe {
        core::arch::asm!("mov cr8, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}
