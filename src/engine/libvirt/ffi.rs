//! The only module of the libvirt driver that uses `unsafe`: event and close
//! callback registration through `virt::sys` (virt 0.5 does not wrap them),
//! an error-checked `virDomainGetState`, a panic-free connection close, and
//! the event loop's wake-up timer.
//!
//! Callbacks run on libvirt's event-loop thread (the close callback may also
//! run on a thread that is inside an API call when it notices EOF). They never
//! call into the daemon: they copy the domain's name and UUID (local accessors)
//! into owned strings and `try_send` a small message.
//!
//! Context passing: every registration gets its own strong reference to a
//! [`CallbackCtx`] (`Arc::into_raw`) as `opaque`, and [`free_ctx`] as the free
//! callback, which libvirt calls once the registration is gone. No globals.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

/// What a callback hands to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    Lifecycle {
        generation: u64,
        uuid: String,
        name: String,
        event: i32,
        detail: i32,
    },
    Reboot {
        generation: u64,
        uuid: String,
        name: String,
    },
    /// A network lifecycle event (`virNetworkEventLifecycleType`).
    Network {
        generation: u64,
        uuid: String,
        name: String,
        event: i32,
    },
    /// Something to look at (close flag, queued command); carries no data.
    Wake,
}

/// Per-worker counters shared by every connection's callbacks.
#[derive(Debug, Default)]
pub struct Shared {
    /// Events that did not fit into the queue (not yet reported).
    pub dropped: AtomicU64,
    /// A lifecycle event was lost: the worker must re-list everything.
    pub resync: AtomicBool,
    /// Events received (all kinds, including dropped ones).
    pub received: AtomicU64,
}

/// The callbacks' view of one connection.
#[derive(Debug)]
pub struct CallbackCtx {
    tx: SyncSender<RawEvent>,
    generation: u64,
    shared: Arc<Shared>,
    /// `-1` while open, else the `virConnectCloseReason`.
    closed: AtomicI32,
}

impl CallbackCtx {
    pub fn new(tx: SyncSender<RawEvent>, generation: u64, shared: Arc<Shared>) -> Self {
        Self {
            tx,
            generation,
            shared,
            closed: AtomicI32::new(-1),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The close reason, once libvirt reported the connection closed.
    pub fn close_reason(&self) -> Option<i32> {
        let r = self.closed.load(Ordering::Acquire);
        (r >= 0).then_some(r)
    }

    fn push(&self, ev: RawEvent) {
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if matches!(ev, RawEvent::Lifecycle { .. } | RawEvent::Network { .. }) {
                    self.shared.resync.store(true, Ordering::Release);
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Text for a `virConnectCloseReason`.
pub fn close_reason_text(reason: i32) -> &'static str {
    match u32::try_from(reason) {
        Ok(sys::VIR_CONNECT_CLOSE_REASON_ERROR) => "connection error",
        Ok(sys::VIR_CONNECT_CLOSE_REASON_EOF) => "end of file from libvirtd",
        Ok(sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE) => "keepalive timeout",
        Ok(sys::VIR_CONNECT_CLOSE_REASON_CLIENT) => "closed by client",
        _ => "closed (unknown reason)",
    }
}

/// Copies a domain's name and UUID out of a pointer libvirt lends us.
///
/// # Safety
/// `dom` must be null or a domain pointer valid for the duration of the call.
unsafe fn domain_ident(dom: sys::virDomainPtr) -> (String, String) {
    if dom.is_null() {
        return (String::new(), String::new());
    }
    // SAFETY: `dom` is valid for this call (caller contract). virDomainGetName
    // returns a pointer into the domain object (or null) that lives as long as
    // `dom`; we copy it before returning.
    let name = unsafe {
        let p = sys::virDomainGetName(dom);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: `buf` has VIR_UUID_STRING_BUFLEN bytes, the size libvirt writes
    // (36 characters plus NUL); on success it is NUL-terminated.
    let uuid = unsafe {
        if sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) < 0 {
            String::new()
        } else {
            CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
        }
    };
    (name, uuid)
}

/// `virConnectDomainEventCallback` (lifecycle).
unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    if opaque.is_null() {
        return 0;
    }
    // SAFETY: `opaque` is the `Arc<CallbackCtx>` raw pointer we registered; it
    // stays valid until libvirt calls `free_ctx`, which happens only after the
    // registration is removed and no callback is running.
    let ctx = unsafe { &*(opaque as *const CallbackCtx) };
    // SAFETY: libvirt lends `dom` for the duration of the callback.
    let (name, uuid) = unsafe { domain_ident(dom) };
    ctx.push(RawEvent::Lifecycle {
        generation: ctx.generation,
        uuid,
        name,
        event,
        detail,
    });
    0
}

/// Copies a network's name and UUID out of a pointer libvirt lends us.
///
/// # Safety
/// `net` must be null or a network pointer valid for the duration of the call.
unsafe fn network_ident(net: sys::virNetworkPtr) -> (String, String) {
    if net.is_null() {
        return (String::new(), String::new());
    }
    // SAFETY: `net` is valid for this call; the name pointer lives as long
    // as `net` and is copied before returning.
    let name = unsafe {
        let p = sys::virNetworkGetName(net);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: `buf` has VIR_UUID_STRING_BUFLEN bytes, what libvirt writes.
    let uuid = unsafe {
        if sys::virNetworkGetUUIDString(net, buf.as_mut_ptr()) < 0 {
            String::new()
        } else {
            CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
        }
    };
    (name, uuid)
}

/// `virConnectNetworkEventLifecycleCallback`.
unsafe extern "C" fn on_network_lifecycle(
    _conn: sys::virConnectPtr,
    net: sys::virNetworkPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: as in `on_lifecycle`.
    let ctx = unsafe { &*(opaque as *const CallbackCtx) };
    // SAFETY: libvirt lends `net` for the duration of the callback.
    let (name, uuid) = unsafe { network_ident(net) };
    ctx.push(RawEvent::Network {
        generation: ctx.generation,
        uuid,
        name,
        event,
    });
}

/// `virConnectDomainEventGenericCallback` (REBOOT).
unsafe extern "C" fn on_reboot(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    opaque: *mut c_void,
) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: as in `on_lifecycle`.
    let ctx = unsafe { &*(opaque as *const CallbackCtx) };
    // SAFETY: libvirt lends `dom` for the duration of the callback.
    let (name, uuid) = unsafe { domain_ident(dom) };
    ctx.push(RawEvent::Reboot {
        generation: ctx.generation,
        uuid,
        name,
    });
}

/// `virConnectCloseFunc`.
unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: as in `on_lifecycle`; the close registration holds its own reference.
    let ctx = unsafe { &*(opaque as *const CallbackCtx) };
    ctx.closed.store(reason.max(0), Ordering::Release);
    // The flag is authoritative; the wake-up only shortens the worker's wait.
    let _ = ctx.tx.try_send(RawEvent::Wake);
}

/// `virFreeCallback`: releases the reference handed over at registration.
unsafe extern "C" fn free_ctx(opaque: *mut c_void) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: `opaque` came from `Arc::into_raw` in `register` and libvirt
    // calls the free callback exactly once per successful registration.
    drop(unsafe { Arc::from_raw(opaque as *const CallbackCtx) });
}

/// What is registered on one connection.
#[derive(Debug, Default)]
pub struct Registrations {
    lifecycle: Option<c_int>,
    reboot: Option<c_int>,
    network: Option<c_int>,
    close: bool,
}

/// A failed step of [`register`]; whatever succeeded before is in `partial`.
#[derive(Debug)]
pub struct RegisterError {
    pub what: &'static str,
    pub error: Error,
    pub partial: Registrations,
}

type LifecycleFn =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int;
type GenericFn = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
type NetLifecycleFn =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virNetworkPtr, c_int, c_int, *mut c_void);
type NetGenericFn = unsafe extern "C" fn(sys::virConnectPtr, sys::virNetworkPtr, *mut c_void);

fn ctx_ref(ctx: &Arc<CallbackCtx>) -> *mut c_void {
    Arc::into_raw(Arc::clone(ctx)) as *mut c_void
}

fn register_domain_event(
    conn: &Connect,
    ctx: &Arc<CallbackCtx>,
    event_id: sys::virDomainEventID,
    cb: GenericFn,
) -> Result<c_int, Error> {
    // Event IDs are small constants (0..=26).
    let id = event_id as c_int;
    // SAFETY: `conn` is open for the duration of the call; a null domain
    // means "all domains"; `cb` has the signature libvirt uses for `id`; the
    // opaque is a live Arc reference that `free_ctx` releases.
    let rc = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            id,
            Some(cb),
            ctx_ref(ctx),
            Some(free_ctx),
        )
    };
    if rc < 0 {
        Err(Error::last_error())
    } else {
        Ok(rc)
    }
}

/// Registers the close callback, then the lifecycle and REBOOT callbacks for
/// all domains.
///
/// On a failed registration libvirt does not take ownership of `opaque`; the
/// reference is deliberately leaked (a few bytes, only on that rare error)
/// rather than freed, so a libvirt that did call the free callback cannot
/// cause a double free.
pub fn register(conn: &Connect, ctx: &Arc<CallbackCtx>) -> Result<Registrations, RegisterError> {
    let mut regs = Registrations::default();
    // SAFETY: `conn` is an open connection for the duration of the call;
    // `on_close` matches virConnectCloseFunc; the opaque is a live Arc
    // reference released by `free_ctx`.
    let rc = unsafe {
        sys::virConnectRegisterCloseCallback(
            conn.as_ptr(),
            Some(on_close),
            ctx_ref(ctx),
            Some(free_ctx),
        )
    };
    if rc < 0 {
        return Err(RegisterError {
            what: "close callback",
            error: Error::last_error(),
            partial: regs,
        });
    }
    regs.close = true;

    // SAFETY: libvirt calls a lifecycle callback with the signature of
    // virConnectDomainEventCallback through the generic pointer type; the
    // documented way to register it is to cast it to the generic type. Both
    // are `extern "C"` function pointers of the same size.
    let lifecycle: GenericFn =
        unsafe { std::mem::transmute::<LifecycleFn, GenericFn>(on_lifecycle as LifecycleFn) };
    match register_domain_event(conn, ctx, sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle) {
        Ok(id) => regs.lifecycle = Some(id),
        Err(error) => {
            return Err(RegisterError {
                what: "lifecycle events",
                error,
                partial: regs,
            });
        }
    }
    match register_domain_event(conn, ctx, sys::VIR_DOMAIN_EVENT_ID_REBOOT, on_reboot) {
        Ok(id) => regs.reboot = Some(id),
        Err(error) => {
            return Err(RegisterError {
                what: "reboot events",
                error,
                partial: regs,
            });
        }
    }
    // SAFETY: as for the domain lifecycle callback: libvirt calls it with the
    // lifecycle signature through the generic pointer type.
    let net_cb: NetGenericFn = unsafe {
        std::mem::transmute::<NetLifecycleFn, NetGenericFn>(on_network_lifecycle as NetLifecycleFn)
    };
    // SAFETY: `conn` is open; a null network means "all networks"; the
    // opaque is a live Arc reference released by `free_ctx`.
    let rc = unsafe {
        sys::virConnectNetworkEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_NETWORK_EVENT_ID_LIFECYCLE as c_int,
            Some(net_cb),
            ctx_ref(ctx),
            Some(free_ctx),
        )
    };
    if rc < 0 {
        return Err(RegisterError {
            what: "network events",
            error: Error::last_error(),
            partial: regs,
        });
    }
    regs.network = Some(rc);
    Ok(regs)
}

/// Removes every registration in `regs`; returns the errors (expected when
/// the connection is already dead).
pub fn deregister(conn: &Connect, regs: &mut Registrations) -> Vec<(&'static str, Error)> {
    let mut errors = Vec::new();
    for (what, slot) in [
        ("lifecycle events", &mut regs.lifecycle),
        ("reboot events", &mut regs.reboot),
    ] {
        if let Some(id) = slot.take() {
            // SAFETY: `conn` is the connection `id` was registered on.
            let rc = unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
            if rc < 0 {
                errors.push((what, Error::last_error()));
            }
        }
    }
    if let Some(id) = regs.network.take() {
        // SAFETY: `conn` is the connection `id` was registered on.
        let rc = unsafe { sys::virConnectNetworkEventDeregisterAny(conn.as_ptr(), id) };
        if rc < 0 {
            errors.push(("network events", Error::last_error()));
        }
    }
    if std::mem::take(&mut regs.close) {
        // SAFETY: `conn` is the connection `on_close` was registered on.
        let rc = unsafe { sys::virConnectUnregisterCloseCallback(conn.as_ptr(), Some(on_close)) };
        if rc < 0 {
            errors.push(("close callback", Error::last_error()));
        }
    }
    errors
}

/// Closes a connection without `Connect`'s panicking `Drop` (virt 0.5 has no
/// `close()`); returns the remaining reference count.
pub fn close(conn: Connect) -> Result<i32, Error> {
    // SAFETY: we take the pointer and forget the wrapper, so the reference the
    // wrapper owned is released exactly once, here.
    let ptr = unsafe { conn.as_ptr() };
    std::mem::forget(conn);
    // SAFETY: `ptr` is the valid connection whose reference we now own.
    let rc = unsafe { sys::virConnectClose(ptr) };
    if rc < 0 {
        Err(Error::last_error())
    } else {
        Ok(rc)
    }
}

/// `virDomainGetState` with its error checked (`Domain::state` ignores it):
/// `(state, reason)` as raw numbers.
pub fn domain_state(dom: &Domain) -> Result<(i32, i32), Error> {
    let mut state: c_int = -1;
    let mut reason: c_int = -1;
    // SAFETY: `dom` is a live domain reference; both out-pointers point to
    // initialised locals.
    let rc = unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        Err(Error::last_error())
    } else {
        Ok((state, reason))
    }
}

/// The XML of every port of a network (`virNetworkListAllPorts` +
/// `virNetworkPortGetXMLDesc`; virt 0.5 has no port API).
pub fn network_port_xmls(net: &virt::network::Network) -> Result<Vec<String>, Error> {
    let mut ports: *mut sys::virNetworkPortPtr = std::ptr::null_mut();
    // SAFETY: `net` is a live network reference; on success libvirt stores
    // an array of `rc` port references in `ports`, which we own.
    let rc = unsafe { sys::virNetworkListAllPorts(net.as_ptr(), &mut ports, 0) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    let n = usize::try_from(rc).unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    let mut first_error = None;
    for i in 0..n {
        // SAFETY: `i < n` elements were written by libvirt.
        let port = unsafe { *ports.add(i) };
        if port.is_null() {
            continue;
        }
        // SAFETY: `port` is a live port reference we own; the returned
        // string is ours to free (libc free, as libvirt documents).
        unsafe {
            let xml = sys::virNetworkPortGetXMLDesc(port, 0);
            if xml.is_null() {
                first_error.get_or_insert_with(Error::last_error);
            } else {
                out.push(CStr::from_ptr(xml).to_string_lossy().into_owned());
                libc::free(xml as *mut c_void);
            }
            sys::virNetworkPortFree(port);
        }
    }
    if !ports.is_null() {
        // SAFETY: the array itself was allocated by libvirt for us.
        unsafe { libc::free(ports as *mut c_void) };
    }
    match first_error {
        Some(e) if out.is_empty() && n > 0 => Err(e),
        _ => Ok(out),
    }
}

unsafe extern "C" fn on_tick(_timer: c_int, _opaque: *mut c_void) {}

/// Adds a repeating no-op timer so `virEventRunDefaultImpl` returns at least
/// every `period_ms` (virt 0.5's `event_add_timeout` mishandles failure).
pub fn add_wakeup_timer(period_ms: i32) -> Result<i32, Error> {
    // SAFETY: `on_tick` matches virEventTimeoutCallback and uses no opaque;
    // nothing needs freeing, so no free callback.
    let rc =
        unsafe { sys::virEventAddTimeout(period_ms, Some(on_tick), std::ptr::null_mut(), None) };
    if rc < 0 {
        Err(Error::last_error())
    } else {
        Ok(rc)
    }
}
