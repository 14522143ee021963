//! The deterministic host: the WASI subset the C guests import and the
//! wasm-bindgen functions rapier imports, with every source of
//! non-determinism under the host's control.
//!
//! - **Clock**: `clock_time_get` returns [`HostState::clock_ns`], which only
//!   moves when the host calls [`Host::begin_frame`] (by
//!   [`HostConfig::frame_ns`]). rapier's `performance.now()` reads the same
//!   clock, in milliseconds.
//! - **Randomness**: `random_get` draws from a SplitMix64 generator seeded by
//!   [`HostConfig::seed`], whose state is part of [`HostState`].
//! - **Output**: `fd_write` to stdout/stderr is kept in a bounded log (not
//!   guest state: it is never read back).
//! - **Files**: one read-only preopened directory (`/wad` for Doom's IWAD);
//!   `path_open` refuses writes (`EROFS`), `..` and absolute paths. Open
//!   file descriptors and their offsets are part of [`HostState`].
//! - **`proc_exit`** traps; every other WASI function returns `ENOSYS`.
//!
//! [`HostState`] is everything the host keeps that the guest can observe.
//! [`Host`] implements [`rewind_wasmer::HostState`], so the session records it
//! with every iteration and puts it back on rollback (a re-simulation sees
//! exactly what the first run saw); nothing is kept outside the session. Its
//! encoding holds the clock, the generator, the next descriptor and each open
//! file's path and offset — file contents stay in the host's read cache.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmer::{
    Extern, Function, FunctionEnv, FunctionEnvMut, FunctionType, Imports, Memory, MemoryView, Module,
    RuntimeError, Store, Type, Value,
};

use crate::Error;

/// The WASI module name of the C guests' imports.
pub const WASI: &str = "wasi_snapshot_preview1";

/// How many bytes of guest output [`Host::output`] keeps (the last ones).
pub const OUTPUT_LIMIT: usize = 64 * 1024;

// WASI errno values (wasi_snapshot_preview1).
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const EROFS: i32 = 69;

// WASI file types.
const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const FILETYPE_DIRECTORY: u8 = 3;
const FILETYPE_REGULAR_FILE: u8 = 4;

// wasm-bindgen heap handles (see `bindgen_function`).
const HEAP_UNDEFINED: i32 = 1024;
const HEAP_GLOBAL: i32 = 1028;
const HEAP_PERFORMANCE: i32 = 1029;
const HEAP_NUMBER: i32 = 1030;

/// The first descriptor after stdin/stdout/stderr: the preopened directory.
const PREOPEN_FD: u32 = 3;

/// How the host behaves.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The clock at the start, in nanoseconds since the epoch.
    pub clock_start_ns: u64,
    /// How far the clock moves per frame.
    pub frame_ns: u64,
    /// The seed of `random_get`.
    pub seed: u64,
    /// A host directory preopened read-only, and the guest path it appears at.
    pub preopen: Option<(PathBuf, String)>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            // 2024-01-01T00:00:00Z: a fixed, plausible date.
            clock_start_ns: 1_704_067_200_000_000_000,
            frame_ns: 1_000_000_000 / 60,
            seed: 0x5EED,
            preopen: None,
        }
    }
}

/// A file opened by the guest.
#[derive(Clone, Debug)]
pub struct OpenFile {
    path: PathBuf,
    data: Arc<Vec<u8>>,
    pos: u64,
}

/// Everything the host keeps that the guest can observe.
#[derive(Clone, Debug)]
pub struct HostState {
    /// The clock, in nanoseconds.
    pub clock_ns: u64,
    /// The state of the `random_get` generator.
    pub rng: u64,
    /// Open files by descriptor.
    pub files: BTreeMap<u32, OpenFile>,
    /// The next descriptor to hand out.
    pub next_fd: u32,
}

struct Shared {
    config: HostConfig,
    state: HostState,
    /// The memory of the live instance (set after each instantiation).
    memory: Option<Memory>,
    output: Vec<u8>,
    cache: BTreeMap<PathBuf, Arc<Vec<u8>>>,
    calls: BTreeMap<String, u64>,
}

/// The host of one guest run: cheap to clone (a shared handle).
#[derive(Clone)]
pub struct Host {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Host")
            .field("config", &s.config)
            .field("state", &s.state)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host in its initial state.
    pub fn new(config: HostConfig) -> Self {
        let state = HostState {
            clock_ns: config.clock_start_ns,
            rng: config.seed,
            files: BTreeMap::new(),
            next_fd: PREOPEN_FD + u32::from(config.preopen.is_some()),
        };
        Self {
            shared: Arc::new(Mutex::new(Shared {
                config,
                state,
                memory: None,
                output: Vec::new(),
                cache: BTreeMap::new(),
                calls: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A poisoned lock only means a host function panicked; the state is
        // plain data and stays usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Advances the clock by one frame (call before each frame).
    pub fn begin_frame(&self) {
        let mut s = self.lock();
        s.state.clock_ns = s.state.clock_ns.wrapping_add(s.config.frame_ns);
    }

    /// Tells the host functions which memory to use (after instantiation).
    pub fn set_memory(&self, memory: Memory) {
        self.lock().memory = Some(memory);
    }

    /// The current host state.
    pub fn state(&self) -> HostState {
        self.lock().state.clone()
    }

    /// The last [`OUTPUT_LIMIT`] bytes the guest wrote to stdout/stderr.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.lock().output).into_owned()
    }

    /// How often each import was called (name → calls).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.lock().calls.clone()
    }

    /// Builds the imports of `module` in `store`: every function the module
    /// imports from [`WASI`] or from wasm-bindgen's `*_bg.js`. Anything else
    /// is an error.
    pub fn imports(&self, store: &mut Store, module: &Module) -> Result<Imports, Error> {
        self.imports_with(store, module, &Imports::new())
    }

    /// Like [`imports`](Self::imports), with `extra` providing the imports of
    /// other modules (a game's own `env.input`, say), built in the same `store`.
    /// An import `extra` defines is taken from it, even from [`WASI`]; one that
    /// neither `extra` nor the host provides is an error naming it.
    pub fn imports_with(
        &self,
        store: &mut Store,
        module: &Module,
        extra: &Imports,
    ) -> Result<Imports, Error> {
        let env = FunctionEnv::new(store, ());
        let mut imports = Imports::new();
        for import in module.imports() {
            if let Some(ext) = extra.get_export(import.module(), import.name()) {
                imports.define(import.module(), import.name(), ext);
                continue;
            }
            let ty = match import.ty() {
                wasmer::ExternType::Function(ty) => ty.clone(),
                other => {
                    return Err(Error::UnsupportedImport {
                        module: import.module().to_owned(),
                        name: import.name().to_owned(),
                        reason: format!("only functions are provided, not {other:?}"),
                    })
                }
            };
            let name = import.name().to_owned();
            let func = if import.module() == WASI {
                self.wasi_function(store, &env, &name, ty)
            } else if import.module().ends_with("_bg.js") {
                self.bindgen_function(store, &env, &name, ty)
            } else {
                return Err(Error::UnsupportedImport {
                    module: import.module().to_owned(),
                    name,
                    reason: "unknown import module".into(),
                });
            };
            imports.define(import.module(), import.name(), Extern::Function(func));
        }
        Ok(imports)
    }

    fn wasi_function(
        &self,
        store: &mut Store,
        env: &FunctionEnv<()>,
        name: &str,
        ty: FunctionType,
    ) -> Function {
        let host = self.clone();
        let name = name.to_owned();
        let returns_errno = ty.results() == [Type::I32];
        Function::new_with_env(store, env, ty, move |env: FunctionEnvMut<()>, args: &[Value]| {
            let mut s = host.lock();
            *s.calls.entry(name.clone()).or_default() += 1;
            if name == "proc_exit" {
                let code = args.first().and_then(Value::i32).unwrap_or(-1);
                return Err(RuntimeError::new(format!("the guest called proc_exit({code})")));
            }
            let memory = s
                .memory
                .clone()
                .ok_or_else(|| RuntimeError::new("host function called before the memory was set"))?;
            let view = memory.view(&env);
            let errno = match wasi_call(&mut s, &view, &name, args) {
                Some(Ok(())) => ESUCCESS,
                Some(Err(errno)) => errno,
                None if returns_errno => ENOSYS,
                None => return Err(RuntimeError::new(format!("unsupported WASI function {name}"))),
            };
            Ok(vec![Value::I32(errno)])
        })
    }

    fn bindgen_function(
        &self,
        store: &mut Store,
        env: &FunctionEnv<()>,
        name: &str,
        ty: FunctionType,
    ) -> Function {
        let host = self.clone();
        let full = name.to_owned();
        // wasm-bindgen names end in a hash (`__wbg_now_e7c6795a7f81e10f`).
        let base = match name.rsplit_once('_') {
            Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                base.to_owned()
            }
            _ => name.to_owned(),
        };
        Function::new_with_env(store, env, ty, move |_env: FunctionEnvMut<()>, args: &[Value]| {
            let mut s = host.lock();
            *s.calls.entry(base.clone()).or_default() += 1;
            // Objects are opaque handles into wasm-bindgen's JS heap, whose
            // first 1,028 slots are reserved (1024 = undefined): 1028 =
            // globalThis, 1029 = performance, 1030 = a number. No object
            // table is kept: nothing is ever looked up by the guest.
            let handle = |i: usize| args.get(i).and_then(Value::i32).unwrap_or(0);
            let ret = match base.as_str() {
                "__wbg_now" => vec![Value::F64(s.state.clock_ns as f64 / 1e6)],
                "__wbg_performance" => vec![Value::I32(HEAP_PERFORMANCE)],
                n if n.starts_with("__wbg_static_accessor_") => vec![Value::I32(HEAP_GLOBAL)],
                "__wbg___wbindgen_is_undefined" => vec![Value::I32(i32::from(handle(0) <= HEAP_UNDEFINED))],
                "__wbg___wbindgen_is_function" => vec![Value::I32(0)],
                "__wbindgen_object_clone_ref" => vec![Value::I32(handle(0))],
                "__wbindgen_object_drop_ref" => vec![],
                n if n.starts_with("__wbindgen_cast_") => vec![Value::I32(HEAP_NUMBER)],
                _ => {
                    return Err(RuntimeError::new(format!(
                        "the guest called the wasm-bindgen import {full}, which this host does not provide"
                    )))
                }
            };
            Ok(ret)
        })
    }
}

fn arg_i32(args: &[Value], i: usize) -> Result<i32, i32> {
    args.get(i).and_then(Value::i32).ok_or(EINVAL)
}

fn arg_u32(args: &[Value], i: usize) -> Result<u32, i32> {
    arg_i32(args, i).map(|v| v as u32)
}

fn arg_i64(args: &[Value], i: usize) -> Result<i64, i32> {
    args.get(i).and_then(Value::i64).ok_or(EINVAL)
}

fn write_bytes(view: &MemoryView<'_>, addr: u32, bytes: &[u8]) -> Result<(), i32> {
    view.write(u64::from(addr), bytes).map_err(|_| EFAULT)
}

fn write_u32(view: &MemoryView<'_>, addr: u32, v: u32) -> Result<(), i32> {
    write_bytes(view, addr, &v.to_le_bytes())
}

fn write_u64(view: &MemoryView<'_>, addr: u32, v: u64) -> Result<(), i32> {
    write_bytes(view, addr, &v.to_le_bytes())
}

fn read_bytes(view: &MemoryView<'_>, addr: u32, len: u32) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len as usize];
    view.read(u64::from(addr), &mut buf).map_err(|_| EFAULT)?;
    Ok(buf)
}

/// The (address, length) pairs of an iovec array.
fn iovecs(view: &MemoryView<'_>, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, i32> {
    let raw = read_bytes(view, ptr, count.checked_mul(8).ok_or(EINVAL)?)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| {
            let word = |r: &[u8]| u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            (word(&c[..4]), word(&c[4..]))
        })
        .collect())
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A guest path inside the preopened directory, or an errno.
fn resolve(dir: &Path, path: &[u8]) -> Result<PathBuf, i32> {
    let path = std::str::from_utf8(path).map_err(|_| EINVAL)?;
    let mut out = dir.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            // No escaping the directory.
            _ => return Err(ENOENT),
        }
    }
    Ok(out)
}

fn filestat(view: &MemoryView<'_>, out: u32, filetype: u8, size: u64) -> Result<(), i32> {
    let mut buf = [0u8; 64];
    buf[16] = filetype;
    buf[24..32].copy_from_slice(&1u64.to_le_bytes());
    buf[32..40].copy_from_slice(&size.to_le_bytes());
    write_bytes(view, out, &buf)
}

/// One WASI call. `None`: not provided (ENOSYS).
fn wasi_call(s: &mut Shared, view: &MemoryView<'_>, name: &str, args: &[Value]) -> Option<Result<(), i32>> {
    Some(match name {
        "args_sizes_get" | "environ_sizes_get" => {
            (|| write_u32(view, arg_u32(args, 0)?, 0).and(write_u32(view, arg_u32(args, 1)?, 0)))()
        }
        "args_get" | "environ_get" => Ok(()),
        "clock_time_get" => (|| write_u64(view, arg_u32(args, 2)?, s.state.clock_ns))(),
        "clock_res_get" => (|| write_u64(view, arg_u32(args, 1)?, 1_000))(),
        "random_get" => wasi_random_get(s, view, args),
        "fd_write" => wasi_fd_write(s, view, args),
        "fd_read" => wasi_fd_read(s, view, args),
        "fd_seek" => wasi_fd_seek(s, view, args),
        "fd_tell" => wasi_fd_tell(s, view, args),
        "fd_close" => wasi_fd_close(s, args),
        "fd_fdstat_get" => wasi_fd_fdstat_get(s, view, args),
        "fd_filestat_get" => wasi_fd_filestat_get(s, view, args),
        "fd_prestat_get" => wasi_fd_prestat_get(s, view, args),
        "fd_prestat_dir_name" => wasi_fd_prestat_dir_name(s, view, args),
        "path_open" => wasi_path_open(s, view, args),
        "path_filestat_get" => wasi_path_filestat_get(s, view, args),
        _ => return None,
    })
}

/// WASI `random_get`.
fn wasi_random_get(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (ptr, len) = (arg_u32(args, 0)?, arg_u32(args, 1)?);
    let mut buf = vec![0u8; len as usize];
    for chunk in buf.chunks_mut(8) {
        let word = splitmix(&mut s.state.rng).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    write_bytes(view, ptr, &buf)
}

/// WASI `fd_write`.
fn wasi_fd_write(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (fd, iovs, count, nwritten) = (
        arg_u32(args, 0)?,
        arg_u32(args, 1)?,
        arg_u32(args, 2)?,
        arg_u32(args, 3)?,
    );
    if fd != 1 && fd != 2 {
        return Err(EBADF);
    }
    let mut total = 0u32;
    for (ptr, len) in iovecs(view, iovs, count)? {
        let bytes = read_bytes(view, ptr, len)?;
        s.output.extend_from_slice(&bytes);
        total = total.wrapping_add(len);
    }
    if s.output.len() > OUTPUT_LIMIT {
        let cut = s.output.len() - OUTPUT_LIMIT;
        s.output.drain(..cut);
    }
    write_u32(view, nwritten, total)
}

/// WASI `fd_read`.
fn wasi_fd_read(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (fd, iovs, count, nread) = (
        arg_u32(args, 0)?,
        arg_u32(args, 1)?,
        arg_u32(args, 2)?,
        arg_u32(args, 3)?,
    );
    if fd == 0 {
        return write_u32(view, nread, 0);
    }
    let vecs = iovecs(view, iovs, count)?;
    let file = s.state.files.get_mut(&fd).ok_or(EBADF)?;
    let mut total = 0u32;
    for (ptr, len) in vecs {
        let start = usize::try_from(file.pos)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        let end = start.saturating_add(len as usize).min(file.data.len());
        let chunk = file.data.get(start..end).ok_or(EFAULT)?;
        write_bytes(view, ptr, chunk)?;
        file.pos += chunk.len() as u64;
        total += chunk.len() as u32;
        if chunk.len() < len as usize {
            break;
        }
    }
    write_u32(view, nread, total)
}

/// WASI `fd_seek`.
fn wasi_fd_seek(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (fd, offset, whence, out) = (
        arg_u32(args, 0)?,
        arg_i64(args, 1)?,
        arg_i32(args, 2)?,
        arg_u32(args, 3)?,
    );
    let file = s.state.files.get_mut(&fd).ok_or(EBADF)?;
    let base = match whence {
        0 => 0i64,
        1 => file.pos as i64,
        2 => file.data.len() as i64,
        _ => return Err(EINVAL),
    };
    let pos = base.checked_add(offset).filter(|p| *p >= 0).ok_or(EINVAL)?;
    file.pos = pos as u64;
    write_u64(view, out, file.pos)
}

/// WASI `fd_tell`.
fn wasi_fd_tell(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let file = s.state.files.get(&arg_u32(args, 0)?).ok_or(EBADF)?;
    write_u64(view, arg_u32(args, 1)?, file.pos)
}

/// WASI `fd_close`.
fn wasi_fd_close(s: &mut Shared, args: &[Value]) -> Result<(), i32> {
    let fd = arg_u32(args, 0)?;
    s.state.files.remove(&fd).map(|_| ()).ok_or(EBADF)
}

/// WASI `fd_fdstat_get`.
fn wasi_fd_fdstat_get(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (fd, out) = (arg_u32(args, 0)?, arg_u32(args, 1)?);
    let filetype = match fd {
        0..=2 => FILETYPE_CHARACTER_DEVICE,
        PREOPEN_FD if s.config.preopen.is_some() => FILETYPE_DIRECTORY,
        fd if s.state.files.contains_key(&fd) => FILETYPE_REGULAR_FILE,
        _ => return Err(EBADF),
    };
    let mut buf = [0u8; 24];
    buf[0] = filetype;
    buf[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    buf[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    write_bytes(view, out, &buf)
}

/// WASI `fd_filestat_get`.
fn wasi_fd_filestat_get(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (fd, out) = (arg_u32(args, 0)?, arg_u32(args, 1)?);
    let file = s.state.files.get(&fd).ok_or(EBADF)?;
    filestat(view, out, FILETYPE_REGULAR_FILE, file.data.len() as u64)
}

/// WASI `fd_prestat_get`.
fn wasi_fd_prestat_get(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (fd, out) = (arg_u32(args, 0)?, arg_u32(args, 1)?);
    match (&s.config.preopen, fd) {
        (Some((_, guest)), PREOPEN_FD) => {
            write_u32(view, out, 0)?;
            write_u32(view, out + 4, guest.len() as u32)
        }
        _ => Err(EBADF),
    }
}

/// WASI `fd_prestat_dir_name`.
fn wasi_fd_prestat_dir_name(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (fd, ptr, len) = (arg_u32(args, 0)?, arg_u32(args, 1)?, arg_u32(args, 2)?);
    match (&s.config.preopen, fd) {
        (Some((_, guest)), PREOPEN_FD) => {
            let name = guest.as_bytes();
            write_bytes(
                view,
                ptr,
                name.get(..(len as usize).min(name.len())).ok_or(EINVAL)?,
            )
        }
        _ => Err(EBADF),
    }
}

/// WASI `path_open`.
fn wasi_path_open(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (dirfd, path_ptr, path_len, oflags, rights) = (
        arg_u32(args, 0)?,
        arg_u32(args, 2)?,
        arg_u32(args, 3)?,
        arg_i32(args, 4)?,
        arg_i64(args, 5)?,
    );
    let out = arg_u32(args, 8)?;
    let dir = match (&s.config.preopen, dirfd) {
        (Some((dir, _)), PREOPEN_FD) => dir.clone(),
        _ => return Err(EBADF),
    };
    const CREAT_TRUNC_EXCL: i32 = 1 | 4 | 8;
    const RIGHT_FD_WRITE: i64 = 1 << 6;
    if oflags & CREAT_TRUNC_EXCL != 0 || rights & RIGHT_FD_WRITE != 0 && oflags & 2 == 0 {
        return Err(EROFS);
    }
    let path = resolve(&dir, &read_bytes(view, path_ptr, path_len)?)?;
    if !path.is_file() {
        return Err(ENOENT);
    }
    let data = match s.cache.get(&path) {
        Some(d) => d.clone(),
        None => {
            let d = Arc::new(std::fs::read(&path).map_err(|_| ENOENT)?);
            s.cache.insert(path.clone(), d.clone());
            d
        }
    };
    let fd = s.state.next_fd;
    s.state.next_fd += 1;
    s.state.files.insert(fd, OpenFile { path, data, pos: 0 });
    write_u32(view, out, fd)
}

/// WASI `path_filestat_get`.
fn wasi_path_filestat_get(s: &mut Shared, view: &MemoryView<'_>, args: &[Value]) -> Result<(), i32> {
    let (dirfd, path_ptr, path_len, out) = (
        arg_u32(args, 0)?,
        arg_u32(args, 2)?,
        arg_u32(args, 3)?,
        arg_u32(args, 4)?,
    );
    let dir = match (&s.config.preopen, dirfd) {
        (Some((dir, _)), PREOPEN_FD) => dir.clone(),
        _ => return Err(EBADF),
    };
    let path = resolve(&dir, &read_bytes(view, path_ptr, path_len)?)?;
    let meta = std::fs::metadata(&path).map_err(|_| ENOENT)?;
    let ty = if meta.is_dir() {
        FILETYPE_DIRECTORY
    } else {
        FILETYPE_REGULAR_FILE
    };
    filestat(view, out, ty, meta.len())
}

/// The encoding of [`HostState`]: clock, generator, next descriptor, then each
/// open file as descriptor, offset and path (little-endian, lengths as `u32`).
impl rewind_wasmer::HostState for Host {
    fn save(&mut self) -> Vec<u8> {
        let s = self.lock();
        let st = &s.state;
        let mut out = Vec::with_capacity(24 + st.files.len() * 32);
        out.extend_from_slice(&st.clock_ns.to_le_bytes());
        out.extend_from_slice(&st.rng.to_le_bytes());
        out.extend_from_slice(&st.next_fd.to_le_bytes());
        out.extend_from_slice(&(st.files.len() as u32).to_le_bytes());
        for (fd, f) in &st.files {
            let path = std::os::unix::ffi::OsStrExt::as_bytes(f.path.as_os_str());
            out.extend_from_slice(&fd.to_le_bytes());
            out.extend_from_slice(&f.pos.to_le_bytes());
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
        }
        out
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), rewind_wasmer::HostStateError> {
        let mut r = Reader(bytes);
        let clock_ns = r.u64()?;
        let rng = r.u64()?;
        let next_fd = r.u32()?;
        let count = r.u32()?;
        let mut s = self.lock();
        let mut files = BTreeMap::new();
        for _ in 0..count {
            let fd = r.u32()?;
            let pos = r.u64()?;
            let len = r.u32()? as usize;
            let path = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                r.take(len)?,
            ));
            let data = match s.cache.get(&path) {
                Some(d) => d.clone(),
                None => {
                    let d = std::fs::read(&path).map_err(|e| {
                        rewind_wasmer::HostStateError::new(format!("cannot reopen {}: {e}", path.display()))
                    })?;
                    let d = Arc::new(d);
                    s.cache.insert(path.clone(), d.clone());
                    d
                }
            };
            files.insert(fd, OpenFile { path, data, pos });
        }
        if !r.0.is_empty() {
            return Err(rewind_wasmer::HostStateError::new(
                "trailing bytes after the host state",
            ));
        }
        s.state = HostState {
            clock_ns,
            rng,
            files,
            next_fd,
        };
        Ok(())
    }
}

/// Reads the host-state encoding, refusing a short buffer.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], rewind_wasmer::HostStateError> {
        if self.0.len() < n {
            return Err(rewind_wasmer::HostStateError::new("the host state is cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, rewind_wasmer::HostStateError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, rewind_wasmer::HostStateError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use rewind_wasmer::{Session, SessionOptions};
    use wasmer::{imports, Function, FunctionEnv, FunctionEnvMut};

    use super::*;

    /// A guest of its own kind: the host's clock from WASI plus a game's own
    /// `env.input` import; each step stores clock + input at 0x100.
    const GUEST: &str = r#"(module
      (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
      (import "env" "input" (func $input (result i64)))
      (memory (export "memory") 1)
      (func (export "step") (param i64)
        (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 0x200)))
        (i64.store (i32.const 0x100) (i64.add (i64.load (i32.const 0x200)) (call $input)))))"#;

    fn input_imports(store: &mut Store, value: &Arc<AtomicI64>) -> Imports {
        let env = FunctionEnv::new(store, value.clone());
        let input = Function::new_typed_with_env(store, &env, |env: FunctionEnvMut<Arc<AtomicI64>>| {
            env.data().load(Ordering::Relaxed)
        });
        imports! { "env" => { "input" => input } }
    }

    #[test]
    fn other_import_modules_come_from_the_caller() {
        let host = Host::new(HostConfig::default());
        let value = Arc::new(AtomicI64::new(5));
        let mut store = Store::default();
        let module = Module::new(&store, GUEST).expect("module");
        let err = host
            .imports(&mut store, &module)
            .expect_err("env.input is unknown to the host");
        assert!(
            matches!(&err, Error::UnsupportedImport { module, name, .. } if module == "env" && name == "input"),
            "{err}"
        );
        let extra = input_imports(&mut store, &value);
        host.imports_with(&mut store, &module, &extra)
            .expect("all imports resolve");
    }

    /// A session of [`GUEST`] on `host`, with `options`.
    fn session_on(host: &Host, options: SessionOptions) -> Session {
        let value = Arc::new(AtomicI64::new(5));
        let imports_host = host.clone();
        let session = Session::with_imports(GUEST, options, move |store| {
            let module = Module::new(store, GUEST).expect("module");
            let extra = input_imports(store, &value);
            imports_host
                .imports_with(store, &module, &extra)
                .expect("imports")
        })
        .expect("session");
        host.set_memory(session.guest().memory().clone());
        session
    }

    #[test]
    fn a_session_resumed_from_an_archive_continues_with_the_hosts_clock() {
        let dir = std::env::temp_dir().join(format!("rewind-guests-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("clock.rwd");
        let _ = std::fs::remove_file(&path);
        let options = || SessionOptions::new(4096).expect("page size").seed(3);
        let host = Host::new(HostConfig::default());
        let mut first = session_on(&host, options().archive(&path, rewind::Durability::EveryAppend));
        first.set_host_state(host.clone(), true);
        let mut hashes = Vec::new();
        for _ in 0..8 {
            host.begin_frame();
            hashes.push(first.step(&[]).expect("step").state_hash);
        }
        drop(first);
        // A new process: a fresh host (its clock at the start) resumes frame 4.
        let host = Host::new(HostConfig::default());
        let mut resumed = session_on(
            &host,
            options().resume_from(&path, 4, rewind::Durability::EveryAppend),
        );
        resumed.set_host_state(host.clone(), true);
        let clock_at_4 = HostConfig::default().clock_start_ns + 4 * HostConfig::default().frame_ns;
        assert_eq!(
            host.state().clock_ns,
            clock_at_4,
            "the clock came back from the archive"
        );
        for expected in &hashes[4..] {
            host.begin_frame();
            assert_eq!(resumed.step(&[]).expect("continue").state_hash, *expected);
        }
        drop(resumed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_guest_runs_on_the_host_and_its_clock_rolls_back() {
        let host = Host::new(HostConfig::default());
        let value = Arc::new(AtomicI64::new(5));
        let (imports_host, imports_value) = (host.clone(), value.clone());
        let mut session = Session::with_imports(
            GUEST,
            SessionOptions::new(4096).expect("page size").seed(3),
            move |store| {
                let module = Module::new(store, GUEST).expect("module");
                let extra = input_imports(store, &imports_value);
                imports_host
                    .imports_with(store, &module, &extra)
                    .expect("imports")
            },
        )
        .expect("session");
        host.set_memory(session.guest().memory().clone());
        session.set_host_state(host.clone(), true);
        let mut hashes = Vec::new();
        for _ in 0..6 {
            host.begin_frame();
            hashes.push(session.step(&[]).expect("step").state_hash);
        }
        let clock_at_3 = HostConfig::default().clock_start_ns + 3 * HostConfig::default().frame_ns;
        session.rollback_to(3).expect("rollback");
        assert_eq!(
            host.state().clock_ns,
            clock_at_3,
            "the clock went back with the guest"
        );
        for expected in &hashes[3..] {
            host.begin_frame();
            assert_eq!(session.step(&[]).expect("re-simulate").state_hash, *expected);
        }
    }
}
