//! A wasmer 7.4.2 instance whose whole state rewind can capture: one linear
//! memory that does not move, and every mutable global — exported or not —
//! reached through the store's object list.
//!
//! # How globals are found
//!
//! wasmer keeps every global of a store in one list
//! ([`wasmer::sys::vm::StoreObjects::iter_globals`]); `objects_mut()` exposes
//! `as_u128_globals()` and `set_global_unchecked(index, value)` over it, the
//! route wasmer's own journal uses. The list also holds the globals of other
//! instances and host-created globals, so [`Guest::instantiate`] records the
//! list's length before instantiating: instantiation appends the module's own
//! (non-imported) globals in module order
//! (`wasmer_compiler::Tunables::create_globals`), so local global `i` sits at
//! store index `before + i`. The types found there are checked against the
//! module's global section.
//!
//! # What is refused
//!
//! State that lives outside the memory and the globals would make a snapshot
//! incomplete, so [`GuestModule::new`] rejects (with [`GuestError`]): an
//! imported memory, more than one memory, no memory, a 64-bit or shared
//! memory, a memory that is not exported, a table the guest or host can
//! change (imported, exported, or the target of `table.set`, `table.grow`,
//! `table.fill`, `table.copy`, `table.init`), an imported mutable global, and
//! a mutable global of reference type.

use std::borrow::Cow;
use std::sync::Arc;

use thiserror::Error;
use wasmer::sys::vm::{StoreId, StoreObject, VMMemory};
use wasmer::wasmparser::{self, Encoding, ExternalKind, Operator, Parser, Payload, TypeRef, ValType};
use wasmer::{
    AsEngineRef, AsStoreMut, AsStoreRef, Imports, Instance, Memory, MemoryStyle, Module, Mutability, Type,
};

use rewind::{GlobalType, GlobalValue};

use crate::dirty::{DirtyError, DirtyTracker};

/// Size of a wasm page in bytes.
const WASM_PAGE: usize = wasmer::WASM_PAGE_SIZE;

/// Errors of [`GuestModule`] and [`Guest`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GuestError {
    /// The WebAssembly text did not parse.
    #[error("invalid WebAssembly text")]
    Wat {
        /// The `wat` parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The module binary did not parse.
    #[error("invalid WebAssembly module")]
    Parse {
        /// The `wasmparser` error.
        #[source]
        source: wasmparser::BinaryReaderError,
    },
    /// A component, not a core module.
    #[error("a WebAssembly component is not supported, only core modules")]
    NotAModule,
    /// wasmer could not compile the module.
    #[error("wasmer could not compile the module")]
    Compile {
        /// wasmer's error.
        #[source]
        source: wasmer::CompileError,
    },
    /// wasmer could not instantiate the module.
    #[error("wasmer could not instantiate the module")]
    Instantiate {
        /// wasmer's error.
        #[source]
        source: Box<wasmer::InstantiationError>,
    },
    /// The module imports its memory, whose state rewind would not own.
    #[error("the module imports its memory ({module}.{name}); rewind needs a memory the instance defines")]
    ImportedMemory {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// More than one memory (multi-memory).
    #[error("the module has {count} memories; rewind supports exactly one")]
    MultipleMemories {
        /// Number of memories, imported and defined.
        count: u32,
    },
    /// The module has no memory.
    #[error("the module has no linear memory")]
    NoMemory,
    /// A 64-bit or shared memory.
    #[error("unsupported memory: {reason}")]
    UnsupportedMemory {
        /// What is unsupported.
        reason: &'static str,
    },
    /// The memory is not exported, so wasmer's public API cannot reach it.
    #[error("the module does not export its memory")]
    MemoryNotExported,
    /// A table whose contents can change after instantiation.
    #[error("table {table} can change after instantiation: {how}")]
    MutableTable {
        /// Table index.
        table: u32,
        /// Why it can change.
        how: TableMutation,
    },
    /// A passive data segment that is both copied into memory
    /// (`memory.init`) and dropped (`data.drop`): whether it was dropped is
    /// instance state outside memory and globals, so a rollback to before the
    /// drop would leave `memory.init` trapping where the original run did not.
    #[error(
        "data segment {segment} is used by memory.init (function {init_func}) and dropped by data.drop (function {drop_func}); its dropped flag is state rewind cannot capture"
    )]
    DroppedDataSegment {
        /// The data segment.
        segment: u32,
        /// A function with `memory.init` of it.
        init_func: u32,
        /// A function with `data.drop` of it.
        drop_func: u32,
    },
    /// An imported mutable global: its state lives outside the instance.
    #[error("the module imports mutable global {module}.{name}, whose state rewind would not own")]
    ImportedMutableGlobal {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// A mutable global of a type rewind cannot snapshot (a reference).
    #[error("mutable global {index} has type {ty}, which cannot be captured")]
    UnsupportedGlobal {
        /// Global index in the module's index space.
        index: u32,
        /// Its type.
        ty: String,
    },
    /// The store's global list did not hold the module's globals where
    /// instantiation was expected to put them.
    #[error("the store's globals do not match the module's: {detail}")]
    GlobalLayoutMismatch {
        /// What did not match.
        detail: String,
    },
    /// The memory was not created with a static reservation, so it may move
    /// when it grows.
    #[error("the memory style is {style}; rewind needs a static reservation whose base does not move")]
    MovableMemory {
        /// The memory style wasmer chose.
        style: String,
    },
    /// The memory's base address changed since the tracker was created.
    #[error("the memory moved from {before:#x} to {now:#x}")]
    MemoryMoved {
        /// Base address when tracking started.
        before: usize,
        /// Base address now.
        now: usize,
    },
    /// A store other than the guest's was passed.
    #[error("the store passed is not the one the guest was instantiated in")]
    WrongStore,
    /// A globals vector of the wrong length.
    #[error("expected {expected} mutable global values, found {found}")]
    GlobalCount {
        /// Number of mutable globals of the guest.
        expected: usize,
        /// Number of values passed.
        found: usize,
    },
    /// A global value whose type is not the type of the guest's global.
    #[error("mutable global {index} has type {expected}, the value given has type {found}")]
    GlobalTypeMismatch {
        /// Global index in the module's index space.
        index: u32,
        /// The global's type.
        expected: GlobalType,
        /// The value's type.
        found: GlobalType,
    },
    /// The memory cannot be resized to the length asked for.
    #[error("cannot resize the memory from {current} to {wanted} bytes: {reason}")]
    Resize {
        /// Current length in bytes.
        current: u64,
        /// Length asked for.
        wanted: u64,
        /// Why not.
        reason: String,
    },
    /// wasmer could not find an export.
    #[error("export lookup failed")]
    Export {
        /// wasmer's error.
        #[source]
        source: wasmer::ExportError,
    },
    /// Kernel dirty tracking failed.
    #[error("dirty-page tracking failed")]
    Dirty(#[from] DirtyError),
}

/// How a table could change after instantiation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableMutation {
    /// The table is imported: the host or another instance can change it.
    Imported {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// The table is exported: the host can change it.
    Exported {
        /// Export name.
        name: String,
    },
    /// A function of the module changes it.
    Instruction {
        /// The instruction (`table.set`, …).
        op: &'static str,
        /// Function index (module index space).
        func: u32,
    },
}

impl std::fmt::Display for TableMutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Imported { module, name } => write!(f, "imported from {module}.{name}"),
            Self::Exported { name } => write!(f, "exported as {name:?}"),
            Self::Instruction { op, func } => write!(f, "function {func} executes {op}"),
        }
    }
}

/// The value type of a global rewind captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalKind {
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `v128`.
    V128,
}

impl GlobalKind {
    /// The bits of wasmer's 128-bit raw global slot that hold a value of this
    /// type (the low bits on little-endian hosts, the only ones wasmer's
    /// compilers target); the rest may hold stale bytes and must be ignored.
    pub fn mask(self) -> u128 {
        match self {
            Self::I32 | Self::F32 => u128::from(u32::MAX),
            Self::I64 | Self::F64 => u128::from(u64::MAX),
            Self::V128 => u128::MAX,
        }
    }

    /// The matching rewind global type.
    pub fn global_type(self) -> GlobalType {
        match self {
            Self::I32 => GlobalType::I32,
            Self::I64 => GlobalType::I64,
            Self::F32 => GlobalType::F32,
            Self::F64 => GlobalType::F64,
            Self::V128 => GlobalType::V128,
        }
    }

    fn wasmer_type(self) -> Type {
        match self {
            Self::I32 => Type::I32,
            Self::I64 => Type::I64,
            Self::F32 => Type::F32,
            Self::F64 => Type::F64,
            Self::V128 => Type::V128,
        }
    }

    fn from_valtype(ty: ValType) -> Option<Self> {
        match ty {
            ValType::I32 => Some(Self::I32),
            ValType::I64 => Some(Self::I64),
            ValType::F32 => Some(Self::F32),
            ValType::F64 => Some(Self::F64),
            ValType::V128 => Some(Self::V128),
            ValType::Ref(_) => None,
        }
    }
}

/// A global the module defines (not imported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    /// Index in the module's global index space (imports first).
    pub index: u32,
    /// Value type; `None` for an immutable reference-typed global, which
    /// rewind does not capture.
    pub kind: Option<GlobalKind>,
    /// Whether the guest can change it.
    pub mutable: bool,
    /// The export name, if exported.
    pub export: Option<String>,
    /// Its name in the module's `name` section (debug info), if the module has one.
    pub name: Option<String>,
}

/// What rewind needs to know about a module, read with `wasmparser`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLayout {
    /// Export name of the memory.
    pub memory_export: String,
    /// Minimum memory size in wasm pages.
    pub memory_minimum: u64,
    /// Declared maximum memory size in wasm pages.
    pub memory_maximum: Option<u64>,
    /// Number of imported globals (all immutable).
    pub imported_globals: u32,
    /// The globals the module defines, in index order.
    pub globals: Vec<GlobalInfo>,
    /// Export names of any kind, in the module, that start with `wasmer_metering_`:
    /// the names wasmer's metering middleware gives its own globals, so a module
    /// exporting them could pass for a metered one.
    pub metering_like_exports: Vec<String>,
}

impl ModuleLayout {
    /// Reads and checks a module binary. See the module docs for what is
    /// refused.
    pub fn parse(wasm: &[u8]) -> Result<Self, GuestError> {
        let mut scan = LayoutScan::default();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(parse_error)? {
                Payload::CustomSection(reader) => {
                    if let wasmparser::KnownCustom::Name(names) = reader.as_known() {
                        read_global_names(names, &mut scan.global_names);
                    }
                }
                Payload::Version {
                    encoding: Encoding::Component,
                    ..
                } => return Err(GuestError::NotAModule),
                Payload::ImportSection(reader) => scan.imports(reader)?,
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        scan.memories += 1;
                        scan.memory_type = Some(memory.map_err(parse_error)?);
                    }
                }
                Payload::GlobalSection(reader) => scan.globals(reader)?,
                Payload::ExportSection(reader) => scan.exports(reader)?,
                Payload::CodeSectionEntry(body) => scan.code(body)?,
                _ => {}
            }
        }
        scan.finish()
    }

    /// The globals rewind captures: the mutable ones, in index order.
    pub fn mutable_globals(&self) -> impl Iterator<Item = &GlobalInfo> {
        self.globals.iter().filter(|g| g.mutable)
    }
}

fn parse_error(source: wasmparser::BinaryReaderError) -> GuestError {
    GuestError::Parse { source }
}

/// What [`ModuleLayout::parse`] gathers section by section, checked as it goes and
/// once more at the end.
#[derive(Default)]
struct LayoutScan {
    memories: u32,
    memory_type: Option<wasmparser::MemoryType>,
    memory_export: Option<String>,
    imported_globals: u32,
    imported_funcs: u32,
    globals: Vec<GlobalInfo>,
    code_index: u32,
    /// Passive data segments used by `memory.init` / dropped by `data.drop`, each with
    /// the first function doing it.
    data_inits: std::collections::BTreeMap<u32, u32>,
    data_drops: std::collections::BTreeMap<u32, u32>,
    metering_like_exports: Vec<String>,
    global_names: std::collections::BTreeMap<u32, String>,
}

impl LayoutScan {
    /// Imports: no memory, no table, no mutable global; count globals and functions.
    fn imports(&mut self, reader: wasmparser::ImportSectionReader<'_>) -> Result<(), GuestError> {
        for import in reader.into_imports() {
            let import = import.map_err(parse_error)?;
            match import.ty {
                TypeRef::Memory(_) => {
                    return Err(GuestError::ImportedMemory {
                        module: import.module.to_owned(),
                        name: import.name.to_owned(),
                    })
                }
                TypeRef::Table(_) => {
                    return Err(GuestError::MutableTable {
                        table: 0,
                        how: TableMutation::Imported {
                            module: import.module.to_owned(),
                            name: import.name.to_owned(),
                        },
                    })
                }
                TypeRef::Global(g) => {
                    if g.mutable {
                        return Err(GuestError::ImportedMutableGlobal {
                            module: import.module.to_owned(),
                            name: import.name.to_owned(),
                        });
                    }
                    self.imported_globals += 1;
                }
                TypeRef::Func(_) | TypeRef::FuncExact(_) => self.imported_funcs += 1,
                TypeRef::Tag(_) => {}
            }
        }
        Ok(())
    }

    /// The module's own globals; a mutable one of a type rewind cannot hold is refused.
    fn globals(&mut self, reader: wasmparser::GlobalSectionReader<'_>) -> Result<(), GuestError> {
        for global in reader {
            let global = global.map_err(parse_error)?;
            let index = self.imported_globals + self.globals.len() as u32;
            let kind = GlobalKind::from_valtype(global.ty.content_type);
            if global.ty.mutable && kind.is_none() {
                return Err(GuestError::UnsupportedGlobal {
                    index,
                    ty: global.ty.content_type.to_string(),
                });
            }
            self.globals.push(GlobalInfo {
                index,
                kind,
                mutable: global.ty.mutable,
                export: None,
                name: None,
            });
        }
        Ok(())
    }

    /// Exports: no table; the first memory export; the export names of globals.
    fn exports(&mut self, reader: wasmparser::ExportSectionReader<'_>) -> Result<(), GuestError> {
        for export in reader {
            let export = export.map_err(parse_error)?;
            if export.name.starts_with("wasmer_metering_") {
                self.metering_like_exports.push(export.name.to_owned());
            }
            match export.kind {
                ExternalKind::Table => {
                    return Err(GuestError::MutableTable {
                        table: export.index,
                        how: TableMutation::Exported {
                            name: export.name.to_owned(),
                        },
                    })
                }
                ExternalKind::Memory if self.memory_export.is_none() => {
                    self.memory_export = Some(export.name.to_owned());
                }
                ExternalKind::Global => {
                    let local = export.index.checked_sub(self.imported_globals);
                    if let Some(g) = local.and_then(|i| self.globals.get_mut(i as usize)) {
                        g.export.get_or_insert_with(|| export.name.to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// One function body: no instruction that changes a table; note `memory.init` and
    /// `data.drop` by segment.
    fn code(&mut self, body: wasmparser::FunctionBody<'_>) -> Result<(), GuestError> {
        let func = self.imported_funcs + self.code_index;
        self.code_index += 1;
        let mut ops = body.get_operators_reader().map_err(parse_error)?;
        while !ops.eof() {
            let (op, table) = match ops.read().map_err(parse_error)? {
                Operator::MemoryInit { data_index, .. } => {
                    self.data_inits.entry(data_index).or_insert(func);
                    continue;
                }
                Operator::DataDrop { data_index } => {
                    self.data_drops.entry(data_index).or_insert(func);
                    continue;
                }
                Operator::TableSet { table } => ("table.set", table),
                Operator::TableGrow { table } => ("table.grow", table),
                Operator::TableFill { table } => ("table.fill", table),
                Operator::TableCopy { dst_table, .. } => ("table.copy", dst_table),
                Operator::TableInit { table, .. } => ("table.init", table),
                _ => continue,
            };
            return Err(GuestError::MutableTable {
                table,
                how: TableMutation::Instruction { op, func },
            });
        }
        Ok(())
    }

    /// The whole-module checks (one 32-bit unshared memory, exported; no segment both
    /// used by `memory.init` and dropped) and the layout.
    fn finish(mut self) -> Result<ModuleLayout, GuestError> {
        if self.memories > 1 {
            return Err(GuestError::MultipleMemories { count: self.memories });
        }
        let memory = self.memory_type.ok_or(GuestError::NoMemory)?;
        if memory.memory64 {
            return Err(GuestError::UnsupportedMemory {
                reason: "64-bit memory (memory64)",
            });
        }
        if memory.shared {
            return Err(GuestError::UnsupportedMemory {
                reason: "shared memory (threads)",
            });
        }
        if let Some((&segment, &drop_func)) = self
            .data_drops
            .iter()
            .find(|(d, _)| self.data_inits.contains_key(d))
        {
            return Err(GuestError::DroppedDataSegment {
                segment,
                init_func: self.data_inits.get(&segment).copied().unwrap_or(drop_func),
                drop_func,
            });
        }
        let names = &mut self.global_names;
        Ok(ModuleLayout {
            memory_export: self.memory_export.ok_or(GuestError::MemoryNotExported)?,
            memory_minimum: memory.initial,
            memory_maximum: memory.maximum,
            imported_globals: self.imported_globals,
            globals: self
                .globals
                .into_iter()
                .map(|g| GlobalInfo {
                    name: names.remove(&g.index),
                    ..g
                })
                .collect(),
            metering_like_exports: self.metering_like_exports,
        })
    }
}

/// The global names of a `name` section. A malformed name section is skipped, not
/// refused: names are debug info, and wasmer instantiates such a module.
fn read_global_names(
    names: wasmparser::NameSectionReader<'_>,
    out: &mut std::collections::BTreeMap<u32, String>,
) {
    for name in names.into_iter().map_while(Result::ok) {
        if let wasmparser::Name::Global(map) = name {
            for naming in map.into_iter().map_while(Result::ok) {
                out.insert(naming.index, naming.name.to_owned());
            }
        }
    }
}

/// A compiled module that passed rewind's checks.
#[derive(Debug, Clone)]
pub struct GuestModule {
    module: Module,
    layout: Arc<ModuleLayout>,
}

impl GuestModule {
    /// Checks and compiles a module binary.
    pub fn new(engine: &impl AsEngineRef, wasm: &[u8]) -> Result<Self, GuestError> {
        let layout = ModuleLayout::parse(wasm)?;
        let module = Module::new(engine, wasm).map_err(|source| GuestError::Compile { source })?;
        Ok(Self {
            module,
            layout: Arc::new(layout),
        })
    }

    /// Checks and compiles a module given as WebAssembly text (or binary).
    pub fn from_wat(engine: &impl AsEngineRef, text: impl AsRef<[u8]>) -> Result<Self, GuestError> {
        let wasm: Cow<'_, [u8]> =
            wasmer::wat2wasm(text.as_ref()).map_err(|e| GuestError::Wat { source: Box::new(e) })?;
        Self::new(engine, &wasm)
    }

    /// The wasmer module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// What the checks found.
    pub fn layout(&self) -> &ModuleLayout {
        &self.layout
    }
}

/// Where a global lives in the store's global list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSlot {
    /// Index in the module's global index space.
    pub index: u32,
    /// Index in the store's global list (`as_u128_globals`,
    /// `set_global_unchecked`).
    pub store_index: usize,
    /// Value type.
    pub kind: GlobalKind,
    /// Export name, if exported.
    pub export: Option<String>,
    /// Name in the module's `name` section, if any.
    pub name: Option<String>,
}

impl GlobalSlot {
    /// How to call the global in a report: its export name, else its name in the
    /// module's `name` section (with a `$`, as WAT writes it), else `global N`.
    pub fn label(&self) -> String {
        match (&self.export, &self.name) {
            (Some(export), _) => export.clone(),
            (None, Some(name)) => format!("${name}"),
            (None, None) => format!("global {}", self.index),
        }
    }
}

/// The linear memory's address reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Base address (`MemoryView::data_ptr`), fixed for the instance's life.
    pub base: usize,
    /// Bytes the memory can ever grow to: the declared maximum, or 4 GiB.
    pub growable_len: usize,
    /// Bytes wasmer mapped: the 4 GiB static bound plus the offset guard.
    pub mapped_len: usize,
}

/// Globals the store holds: what [`start_ran_out_of_fuel`] counts from.
pub(crate) fn store_globals(store: &mut impl AsStoreMut) -> usize {
    store.objects_mut().as_sys().iter_globals().len()
}

/// After `err` from [`Guest::instantiate`] in a store that held `globals_before`
/// globals: true when the module's start function trapped because wasmer's metering
/// middleware ran out of points.
///
/// The middleware adds two globals after the module's own (the points remaining, a
/// mutable `i64`, then the exhausted flag, a mutable `i32`), and sets the flag before it
/// traps. Instantiation creates the globals before the start function runs, and a
/// failed instantiation leaves them in the store, so the flag is the last global the
/// instantiation created.
pub(crate) fn start_ran_out_of_fuel(
    store: &mut impl AsStoreMut,
    globals_before: usize,
    err: &GuestError,
) -> bool {
    let GuestError::Instantiate { source } = err else {
        return false;
    };
    if !matches!(**source, wasmer::InstantiationError::Start(_)) {
        return false;
    }
    let types: Vec<wasmer::GlobalType> = store
        .objects_mut()
        .as_sys()
        .iter_globals()
        .skip(globals_before)
        .map(|g| *g.ty())
        .collect();
    let n = types.len();
    let metering_shaped = n >= 2
        && types
            .get(n - 2)
            .is_some_and(|t| t.ty == Type::I64 && t.mutability == Mutability::Var)
        && types
            .get(n - 1)
            .is_some_and(|t| t.ty == Type::I32 && t.mutability == Mutability::Var);
    if !metering_shaped {
        return false;
    }
    let values = store.objects_mut().as_u128_globals();
    values
        .get(globals_before + n - 1)
        .is_some_and(|flag| (*flag & 0xffff_ffff) != 0)
}

/// An instance of a [`GuestModule`] with its memory and mutable globals located.
#[derive(Debug, Clone)]
pub struct Guest {
    instance: Instance,
    memory: Memory,
    layout: Arc<ModuleLayout>,
    globals: Vec<GlobalSlot>,
    reservation: Reservation,
    store_id: StoreId,
}

impl Guest {
    /// Instantiates `module` in `store` and locates its state: the memory
    /// (which must use a static reservation) and the store index of every
    /// mutable global it defines.
    pub fn instantiate(
        store: &mut impl AsStoreMut,
        module: &GuestModule,
        imports: &Imports,
    ) -> Result<Self, GuestError> {
        let (globals_before, memories_before) = {
            let objects = store.objects_mut().as_sys();
            (objects.iter_globals().len(), VMMemory::list(objects).len())
        };
        let instance =
            Instance::new(store, &module.module, imports).map_err(|source| GuestError::Instantiate {
                source: Box::new(source),
            })?;
        let layout = Arc::clone(&module.layout);

        let objects = store.objects_mut();
        let store_id = objects.id();
        let sys = objects.as_sys();
        let store_globals: Vec<_> = sys
            .iter_globals()
            .skip(globals_before)
            .take(layout.globals.len())
            .collect();
        if store_globals.len() != layout.globals.len() {
            return Err(GuestError::GlobalLayoutMismatch {
                detail: format!(
                    "expected {} new globals at store index {globals_before}, found {}",
                    layout.globals.len(),
                    store_globals.len()
                ),
            });
        }
        let mut globals = Vec::new();
        for (offset, (info, vm)) in layout.globals.iter().zip(store_globals).enumerate() {
            let ty = vm.ty();
            let mutability = if info.mutable {
                Mutability::Var
            } else {
                Mutability::Const
            };
            let type_ok = info.kind.is_none_or(|k| k.wasmer_type() == ty.ty);
            if !type_ok || ty.mutability != mutability {
                return Err(GuestError::GlobalLayoutMismatch {
                    detail: format!(
                        "global {} is {:?} {:?} in the module but {:?} {:?} at store index {}",
                        info.index,
                        mutability,
                        info.kind,
                        ty.mutability,
                        ty.ty,
                        globals_before + offset
                    ),
                });
            }
            if let (true, Some(kind)) = (info.mutable, info.kind) {
                globals.push(GlobalSlot {
                    index: info.index,
                    store_index: globals_before + offset,
                    kind,
                    export: info.export.clone(),
                    name: info.name.clone(),
                });
            }
        }

        let vm_memory =
            VMMemory::list(sys)
                .get(memories_before)
                .ok_or_else(|| GuestError::GlobalLayoutMismatch {
                    detail: format!("no memory was created at store memory index {memories_before}"),
                })?;
        let style = vm_memory.0.style();
        let ty = vm_memory.0.ty();
        let mapped_len = match style {
            MemoryStyle::Static => MemoryStyle::static_bound().bytes().0 + style.offset_guard_size() as usize,
            MemoryStyle::Dynamic { .. } => {
                return Err(GuestError::MovableMemory {
                    style: format!("{style:?}"),
                })
            }
        };
        let growable_pages = ty.maximum.map_or(MemoryStyle::static_bound().0, |m| m.0);
        let growable_len = growable_pages as usize * WASM_PAGE;

        let memory = instance
            .exports
            .get_memory(&layout.memory_export)
            .map_err(|source| GuestError::Export { source })?
            .clone();
        let base = memory.view(store).data_ptr() as usize;
        Ok(Self {
            instance,
            memory,
            layout,
            globals,
            reservation: Reservation {
                base,
                growable_len,
                mapped_len,
            },
            store_id,
        })
    }

    /// The wasmer instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The linear memory.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The module's layout.
    pub fn layout(&self) -> &ModuleLayout {
        &self.layout
    }

    /// The mutable globals, in module index order, with their store indices.
    pub fn globals(&self) -> &[GlobalSlot] {
        &self.globals
    }

    /// The memory's address reservation.
    pub fn reservation(&self) -> Reservation {
        self.reservation
    }

    fn check_store(&self, store: &mut impl AsStoreMut) -> Result<(), GuestError> {
        if store.objects_mut().id() == self.store_id {
            Ok(())
        } else {
            Err(GuestError::WrongStore)
        }
    }

    /// Replaces `out` with the values of the mutable globals (in the order of
    /// [`globals`](Self::globals)), each masked to its type's width.
    pub fn read_globals(&self, store: &mut impl AsStoreMut, out: &mut Vec<u128>) -> Result<(), GuestError> {
        self.check_store(store)?;
        let all = store.objects_mut().as_u128_globals();
        out.clear();
        for slot in &self.globals {
            let raw = all
                .get(slot.store_index)
                .ok_or_else(|| GuestError::GlobalLayoutMismatch {
                    detail: format!("store index {} is gone", slot.store_index),
                })?;
            out.push(raw & slot.kind.mask());
        }
        Ok(())
    }

    /// Writes the mutable globals from `values` (in the order of
    /// [`globals`](Self::globals)); bits above each type's width are cleared.
    pub fn write_globals(&self, store: &mut impl AsStoreMut, values: &[u128]) -> Result<(), GuestError> {
        self.check_store(store)?;
        if values.len() != self.globals.len() {
            return Err(GuestError::GlobalCount {
                expected: self.globals.len(),
                found: values.len(),
            });
        }
        let objects = store.objects_mut();
        for (slot, &value) in self.globals.iter().zip(values) {
            // `set_global_unchecked` requires a raw value compatible with the
            // global's type: every slot here is numeric (i32/i64/f32/f64/v128,
            // checked against the store's VMGlobal type at instantiation), for
            // which every bit pattern is a valid value.
            objects.set_global_unchecked(slot.store_index, value & slot.kind.mask());
        }
        Ok(())
    }

    /// Current memory length in bytes.
    pub fn memory_len(&self, store: &impl AsStoreRef) -> usize {
        self.memory.view(store).data_size() as usize
    }

    /// Replaces `out` with the mutable globals as rewind values, each with its
    /// type (in the order of [`globals`](Self::globals)).
    pub fn read_global_values(
        &self,
        store: &mut impl AsStoreMut,
        out: &mut Vec<GlobalValue>,
    ) -> Result<(), GuestError> {
        self.check_store(store)?;
        let all = store.objects_mut().as_u128_globals();
        out.clear();
        for slot in &self.globals {
            let raw = all
                .get(slot.store_index)
                .ok_or_else(|| GuestError::GlobalLayoutMismatch {
                    detail: format!("store index {} is gone", slot.store_index),
                })?;
            out.push(GlobalValue::from_bits(slot.kind.global_type(), *raw));
        }
        Ok(())
    }

    /// Checks that `values` match the mutable globals one for one, by count
    /// and type, without writing anything.
    pub fn check_global_values(&self, values: &[GlobalValue]) -> Result<(), GuestError> {
        if values.len() != self.globals.len() {
            return Err(GuestError::GlobalCount {
                expected: self.globals.len(),
                found: values.len(),
            });
        }
        for (slot, value) in self.globals.iter().zip(values) {
            let expected = slot.kind.global_type();
            if value.ty() != expected {
                return Err(GuestError::GlobalTypeMismatch {
                    index: slot.index,
                    expected,
                    found: value.ty(),
                });
            }
        }
        Ok(())
    }

    /// Writes the mutable globals from rewind values (in the order of
    /// [`globals`](Self::globals)). Nothing is written unless every value has
    /// its global's type.
    pub fn write_global_values(
        &self,
        store: &mut impl AsStoreMut,
        values: &[GlobalValue],
    ) -> Result<(), GuestError> {
        self.check_global_values(values)?;
        let raw: Vec<u128> = values.iter().map(GlobalValue::to_bits).collect();
        self.write_globals(store, &raw)
    }

    /// Runs `f` on the linear memory's bytes, read-only.
    ///
    /// The slice lives only inside `f`, while this call holds the store
    /// exclusively: no guest code can run and the memory can neither grow nor
    /// be written by anyone else meanwhile.
    pub fn with_memory<R>(
        &self,
        store: &mut impl AsStoreMut,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, GuestError> {
        self.check_store(store)?;
        self.current_base(store)?;
        let view = self.memory.view(store);
        // SAFETY: `data_unchecked` requires that the memory is not modified or
        // resized while the slice lives. The slice lives only for the call to
        // `f` below and does not escape it (`f` returns `R`, which cannot
        // borrow from the argument: the lifetime is higher-ranked). During that
        // call this function holds `&mut` to the store the memory belongs to
        // (checked above by `check_store`), so no guest function of this
        // store can run (calls need the store mutably), no `MemoryView` or
        // `Memory::grow` can be created or called by anyone else, and no other
        // thread can use the store. The memory is not shared (shared memories
        // are refused by `ModuleLayout::parse`) and is not imported from
        // elsewhere, so nothing outside this store can write it. The base and
        // length come from the live `VMMemoryDefinition` read just now.
        #[allow(unsafe_code)]
        let bytes = unsafe { view.data_unchecked() };
        Ok(f(bytes))
    }

    /// Runs `f` on the linear memory's bytes, writable. Writes through the
    /// slice are ordinary memory writes, so the kernel dirty tracker sees them.
    ///
    /// The same reasoning as [`with_memory`](Self::with_memory) applies.
    pub fn with_memory_mut<R>(
        &self,
        store: &mut impl AsStoreMut,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, GuestError> {
        self.check_store(store)?;
        self.current_base(store)?;
        let view = self.memory.view(store);
        // SAFETY: `data_unchecked_mut` requires that, while the slice lives,
        // the memory is accessed only through it and is not resized. The
        // slice lives only for the call to `f` and cannot escape it (the
        // lifetime is higher-ranked). This function holds `&mut` to the
        // memory's own store (checked by `check_store`) for the whole call, so
        // no guest code, `MemoryView` read/write or `Memory::grow` of this
        // store can happen meanwhile, and no other thread can use the store;
        // `view` itself is not used again after this line. The memory is
        // neither shared nor imported (refused by `ModuleLayout::parse`), so
        // nothing outside the store aliases it.
        #[allow(unsafe_code)]
        let bytes = unsafe { view.data_unchecked_mut() };
        Ok(f(bytes))
    }

    /// Grows the memory to exactly `len` bytes (a multiple of the 64 KiB wasm
    /// page). The memory cannot shrink: a smaller `len` is an error.
    pub fn grow_to(&self, store: &mut impl AsStoreMut, len: u64) -> Result<(), GuestError> {
        self.check_store(store)?;
        let current = self.memory_len(store) as u64;
        let resize = |reason: String| GuestError::Resize {
            current,
            wanted: len,
            reason,
        };
        if len < current {
            return Err(resize("wasm memory cannot shrink".into()));
        }
        if !len.is_multiple_of(WASM_PAGE as u64) {
            return Err(resize("not a whole number of 64 KiB wasm pages".into()));
        }
        let delta = (len - current) / WASM_PAGE as u64;
        if delta == 0 {
            return Ok(());
        }
        let delta = u32::try_from(delta).map_err(|_| resize("too many pages".into()))?;
        self.memory
            .grow(store, wasmer::Pages(delta))
            .map_err(|e| resize(e.to_string()))?;
        Ok(())
    }

    /// Starts kernel dirty tracking of the memory: registers the growable part
    /// of the reservation and write-protects the current length.
    pub fn dirty_tracker(&self, store: &impl AsStoreRef) -> Result<DirtyTracker, GuestError> {
        let base = self.current_base(store)?;
        Ok(DirtyTracker::new(
            base as *mut u8,
            self.reservation.growable_len,
            self.memory_len(store),
        )?)
    }

    /// Replaces `out` with the rewind pages written since the previous call
    /// (see [`DirtyTracker::take_written`]), covering any growth since.
    pub fn take_written(
        &self,
        store: &impl AsStoreRef,
        tracker: &mut DirtyTracker,
        page_size: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), GuestError> {
        let base = self.current_base(store)?;
        if base != tracker.base() as usize {
            return Err(GuestError::MemoryMoved {
                before: tracker.base() as usize,
                now: base,
            });
        }
        tracker.take_written(self.memory_len(store), page_size, out)?;
        Ok(())
    }

    fn current_base(&self, store: &impl AsStoreRef) -> Result<usize, GuestError> {
        let now = self.memory.view(store).data_ptr() as usize;
        if now != self.reservation.base {
            return Err(GuestError::MemoryMoved {
                before: self.reservation.base,
                now,
            });
        }
        Ok(now)
    }
}

#[cfg(test)]
mod tests;
