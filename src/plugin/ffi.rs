//! The only `unsafe` in the crate: loading a plugin image and calling through its table.
//!
//! A [`Plugin`] is made, used and dropped on its plugin's own thread (it is not `Send`): plugin
//! code never runs anywhere else, so a library with thread-locals can unload once that thread
//! is joined. Strings handed to the plugin live for the duration of the call only. The host's
//! table and the services behind it are boxed and outlive the plugin's state, which `Drop`
//! destroys before the library is closed.

#![allow(unsafe_code)]

use binance_syncd_plugin::abi;
use libloading::Library;
use std::ffi::c_void;
use std::fmt;
use std::mem::{offset_of, size_of, MaybeUninit};
use std::path::Path;

/// What a plugin may ask of the host, in safe terms.
pub trait HostServices {
    /// Queues an intent; `Err` with a negative status when it is refused. `&self`: a plugin may
    /// call back in while another host callback of it is running.
    fn submit(&self, intent: IntentIn<'_>) -> Result<u64, i32>;
    fn log(&self, level: i32, msg: &str);
    /// The rules of `symbol` as JSON.
    fn rules(&self, symbol: &str) -> Option<String>;
}

/// An intent as the plugin sent it, before the host validates it.
#[derive(Debug, Clone, Copy)]
pub struct IntentIn<'a> {
    pub kind: u8,
    pub side: u8,
    pub order_id: u64,
    pub symbol: &'a str,
    pub price: &'a str,
    pub qty: &'a str,
    pub client_order_id: &'a str,
}

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `dlopen` failed: not a shared object for this machine, missing dependencies, ...
    Open(String),
    /// The file has no `syncd_plugin_entry_v1`.
    NoEntry(String),
    /// The entry returned no table, or `create` returned no state.
    Init(&'static str),
    /// Another major version of the ABI.
    Abi { found: u32, ours: u32 },
    /// A table too small to hold the required fields, or with a required one missing.
    Table(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open(why) => write!(f, "cannot load it as a shared library: {why}"),
            LoadError::NoEntry(why) => write!(f, "no entry symbol syncd_plugin_entry_v1: {why}"),
            LoadError::Init(what) => write!(f, "it did not initialise: {what}"),
            LoadError::Abi { found, ours } => {
                write!(f, "it speaks plugin ABI {found}.x; this daemon speaks ABI {ours}.x")
            }
            LoadError::Table(why) => write!(f, "its plugin table is unusable: {why}"),
        }
    }
}

/// The context behind `HostV1::ctx`.
struct Ctx {
    services: Box<dyn HostServices>,
}

fn text<'a>(s: abi::Str) -> Option<&'a str> {
    if s.len == 0 {
        return Some("");
    }
    if s.ptr.is_null() {
        return None;
    }
    // SAFETY: the plugin passes a pointer and length of memory it keeps alive for this call.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    std::str::from_utf8(bytes).ok()
}

unsafe extern "C" fn host_submit(ctx: *mut c_void, intent: *const abi::Intent, request: *mut u64) -> abi::Status {
    if ctx.is_null() || intent.is_null() || request.is_null() {
        return abi::STATUS_REFUSED;
    }
    // SAFETY: `ctx` is our `Ctx` (from `Box::into_raw`), alive while the plugin exists, only
    // its own thread calls in, and it is only ever borrowed shared; `intent` is live for this
    // call.
    let (ctx, i) = unsafe { (&*(ctx as *const Ctx), &*intent) };
    let (Some(symbol), Some(price), Some(qty), Some(client_order_id)) =
        (text(i.symbol), text(i.price), text(i.qty), text(i.client_order_id))
    else {
        return abi::STATUS_REFUSED;
    };
    let parsed = IntentIn { kind: i.kind, side: i.side, order_id: i.order_id, symbol, price, qty, client_order_id };
    match ctx.services.submit(parsed) {
        Ok(id) => {
            // SAFETY: checked non-null above; the plugin passes a writable u64.
            unsafe { *request = id };
            abi::STATUS_OK
        }
        Err(status) => status,
    }
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: abi::Str) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: as in `host_submit`.
    let ctx = unsafe { &*(ctx as *const Ctx) };
    if let Some(msg) = text(msg) {
        ctx.services.log(level, msg);
    }
}

unsafe extern "C" fn host_rules(
    ctx: *mut c_void,
    symbol: abi::Str,
    sink: Option<unsafe extern "C" fn(user: *mut c_void, json: abi::Str)>,
    user: *mut c_void,
) -> abi::Status {
    let Some(sink) = sink else { return abi::STATUS_REFUSED };
    if ctx.is_null() {
        return abi::STATUS_REFUSED;
    }
    // SAFETY: as in `host_submit`.
    let ctx = unsafe { &*(ctx as *const Ctx) };
    let Some(json) = text(symbol).and_then(|s| ctx.services.rules(s)) else { return abi::STATUS_REFUSED };
    // SAFETY: `sink` and `user` come from the plugin for this call; `json` outlives it.
    unsafe { sink(user, abi::Str::of(&json)) };
    abi::STATUS_OK
}

/// A loaded, created plugin.
pub struct Plugin {
    table: abi::PluginV1,
    state: *mut c_void,
    version: String,
    // Declared in drop order: the state is destroyed in `Drop::drop` (which also frees `ctx`),
    // then the host table, then the library itself.
    ctx: *mut Ctx,
    _host: Box<abi::HostV1>,
    _lib: Library,
}

/// Reads the plugin's table: the header first, then as many bytes as both sides know.
///
/// # Safety
/// `ptr` is non-null and points at a table the plugin keeps alive (static data).
unsafe fn read_table(ptr: *const abi::PluginV1) -> Result<abi::PluginV1, LoadError> {
    // SAFETY: per the contract, the three header words exist in every version.
    let (major, size) = unsafe { ((*ptr).abi_major, (*ptr).size as usize) };
    if major != abi::ABI_MAJOR {
        return Err(LoadError::Abi { found: major, ours: abi::ABI_MAJOR });
    }
    if size < abi::PLUGIN_REQUIRED_SIZE {
        return Err(LoadError::Table(format!("{size} bytes, fewer than the {} required", abi::PLUGIN_REQUIRED_SIZE)));
    }
    // Whole fields only: a size that ends inside a callback must not leave half a pointer.
    let optional = size.min(size_of::<abi::PluginV1>()) - abi::PLUGIN_REQUIRED_SIZE;
    let take = abi::PLUGIN_REQUIRED_SIZE + optional / size_of::<usize>() * size_of::<usize>();
    let mut buf = MaybeUninit::<abi::PluginV1>::zeroed();
    // SAFETY: `take` bytes are readable (the plugin says `size`, we take at most ours) and the
    // buffer holds `size_of::<PluginV1>()`; the fields past `take` stay zero, which for the
    // optional callbacks means `None`.
    unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, buf.as_mut_ptr() as *mut u8, take) };
    for (field, offset) in
        [("create", offset_of!(abi::PluginV1, create)), ("destroy", offset_of!(abi::PluginV1, destroy))]
    {
        // SAFETY: both offsets lie inside the required prefix copied above.
        let word = unsafe { std::ptr::read_unaligned((buf.as_ptr() as *const u8).add(offset) as *const usize) };
        if word == 0 {
            return Err(LoadError::Table(format!("{field} is null")));
        }
    }
    // SAFETY: every required field is present and non-null, every optional one is a valid
    // `Option` (a function pointer or zero).
    Ok(unsafe { buf.assume_init() })
}

type Entry = unsafe extern "C" fn(*const abi::HostV1) -> *const abi::PluginV1;

/// The library's one entry point.
fn entry_of(lib: &Library) -> Result<Entry, LoadError> {
    // SAFETY: the versioned symbol name fixes the function's type (the ABI's contract).
    unsafe { lib.get::<Entry>(abi::ENTRY_SYMBOL) }.map(|s| *s).map_err(|e| LoadError::NoEntry(e.to_string()))
}

/// The host's table with `ctx` behind it.
fn host_table(ctx: *mut Ctx) -> Box<abi::HostV1> {
    Box::new(abi::HostV1 {
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        size: size_of::<abi::HostV1>() as u32,
        _reserved: 0,
        ctx: ctx as *mut c_void,
        submit: host_submit,
        log: host_log,
        rules: host_rules,
    })
}

impl Plugin {
    /// Loads the image at `path` (a private copy: see the module doc of `plugin`), checks its
    /// ABI, and creates its state with `services` behind the host table.
    pub fn load(path: &Path, services: Box<dyn HostServices>) -> Result<Plugin, LoadError> {
        // SAFETY: loading runs the library's initialisers; we accept that for the files an
        // operator put in SYNCD_PLUGIN_DIR, which is the whole point of the directory.
        let lib = unsafe { Library::new(path) }.map_err(|e| LoadError::Open(e.to_string()))?;
        let entry = entry_of(&lib)?;
        let ctx = Box::into_raw(Box::new(Ctx { services }));
        // Until the `Plugin` owns it, every early return must free it.
        let free_ctx = |ctx: *mut Ctx| {
            // SAFETY: `ctx` came from `Box::into_raw` above and no plugin state refers to it.
            drop(unsafe { Box::from_raw(ctx) });
        };
        let host = host_table(ctx);
        // SAFETY: `entry` has the ABI's type; the host table outlives the plugin (owned below).
        let ptr = unsafe { entry(&*host) };
        if ptr.is_null() {
            free_ctx(ctx);
            return Err(LoadError::Init("the entry returned no table"));
        }
        // SAFETY: non-null, and the ABI says the table is static data of the library.
        let table = match unsafe { read_table(ptr) } {
            Ok(t) => t,
            Err(e) => {
                free_ctx(ctx);
                return Err(e);
            }
        };
        // SAFETY: `create` is present (checked) and gets the host table it may keep.
        let state = unsafe { (table.create)(&*host) };
        if state.is_null() {
            free_ctx(ctx);
            return Err(LoadError::Init("create returned no state"));
        }
        let version = text(table.version).unwrap_or("").to_string();
        Ok(Plugin { table, state, version, ctx, _host: host, _lib: lib })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The minor ABI version the plugin was built against: what it can be sent.
    pub fn abi_minor(&self) -> u32 {
        self.table.abi_minor
    }

    pub fn start(&mut self, name: &str, settings: &str, snapshot: &str) -> abi::Status {
        let start =
            abi::Start { name: abi::Str::of(name), settings: abi::Str::of(settings), snapshot: abi::Str::of(snapshot) };
        match self.table.start {
            // SAFETY: our state, a live argument, on the plugin's thread.
            Some(f) => unsafe { f(self.state, &start) },
            None => abi::STATUS_OK,
        }
    }

    pub fn on_fill(&mut self, fill: &abi::Fill) -> abi::Status {
        match self.table.on_fill {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(self.state, fill) },
            None => abi::STATUS_OK,
        }
    }

    pub fn on_order(&mut self, update: &abi::OrderUpdate) -> abi::Status {
        match self.table.on_order {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(self.state, update) },
            None => abi::STATUS_OK,
        }
    }

    pub fn on_price(&mut self, price: &abi::Price) -> abi::Status {
        match self.table.on_price {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(self.state, price) },
            None => abi::STATUS_OK,
        }
    }

    pub fn on_balance(&mut self, balance: &abi::Balance) -> abi::Status {
        match self.table.on_balance {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(self.state, balance) },
            None => abi::STATUS_OK,
        }
    }

    pub fn on_tick(&mut self, now_ms: i64) -> abi::Status {
        match self.table.on_tick {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(self.state, now_ms) },
            None => abi::STATUS_OK,
        }
    }

    /// Whether it exports `on_book`, `on_trade` (ABI 1.5): what it is sent of the market.
    pub fn market_wants(&self) -> (bool, bool) {
        (self.table.on_book.is_some(), self.table.on_trade.is_some())
    }

    pub fn on_book(&mut self, book: &abi::Book) -> abi::Status {
        match self.table.on_book {
            // SAFETY: as in `start`; the levels behind `book` live for the call.
            Some(f) => unsafe { f(self.state, book) },
            None => abi::STATUS_OK,
        }
    }

    pub fn on_trade(&mut self, trade: &abi::Trade) -> abi::Status {
        match self.table.on_trade {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(self.state, trade) },
            None => abi::STATUS_OK,
        }
    }

    pub fn stop(&mut self) -> abi::Status {
        match self.table.stop {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(self.state) },
            None => abi::STATUS_OK,
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // SAFETY: `state` came from this table's `create` and is destroyed exactly once, before
        // the context, the host table and the library go.
        unsafe { (self.table.destroy)(self.state) };
        // SAFETY: `ctx` came from `Box::into_raw` in `load`; the state that used it is gone.
        drop(unsafe { Box::from_raw(self.ctx) });
    }
}
