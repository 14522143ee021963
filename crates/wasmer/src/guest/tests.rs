use wasmer::{imports, Function, Global, Store, TypedFunction, Value};

use super::*;

const GUEST: &str = r#"
(module
  (import "env" "k" (global $k i32))
  (memory (export "memory") 1 100)
  (global $counter (mut i32) (i32.const 5))
  (global $sp (mut i64) (i64.const 77))
  (global $f (mut f64) (f64.const 1.5))
  (global $c i32 (i32.const 9))
  (global $exp (export "exp") (mut i32) (i32.const 3))
  (global $v (mut v128) (v128.const i64x2 1 2))
  (global $r funcref (ref.null func))
  (func (export "get_counter") (result i32) global.get $counter)
  (func (export "get_sp") (result i64) global.get $sp)
  (func (export "bump") global.get $counter i32.const 1 i32.add global.set $counter)
  (func (export "store") (param i32 i32) local.get 0 local.get 1 i32.store)
  (func (export "load") (param i32) (result i32) local.get 0 i32.load)
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
)
"#;

/// Another module with its own globals, instantiated first in the same store.
const OTHER: &str = r#"
(module
  (memory (export "memory") 1)
  (global (mut i32) (i32.const 1111))
  (global (mut i64) (i64.const 2222))
  (func (export "get") (result i32) global.get 0))
"#;

fn guest_imports(store: &mut Store) -> Imports {
    let k = Global::new(store, Value::I32(42));
    imports! { "env" => { "k" => k } }
}

/// A store holding a host global and another instance before the guest.
fn crowded_store() -> (Store, Guest, Guest) {
    let mut store = Store::default();
    let _host_global = Global::new_mut(&mut store, Value::I64(-1));
    let other = GuestModule::from_wat(&store, OTHER).expect("other module");
    let other = Guest::instantiate(&mut store, &other, &Imports::new()).expect("other instance");
    let module = GuestModule::from_wat(&store, GUEST).expect("guest module");
    let imports = guest_imports(&mut store);
    let guest = Guest::instantiate(&mut store, &module, &imports).expect("guest instance");
    (store, guest, other)
}

fn typed<A, R>(store: &Store, guest: &Guest, name: &str) -> TypedFunction<A, R>
where
    A: wasmer::WasmTypeList,
    R: wasmer::WasmTypeList,
{
    guest
        .instance()
        .exports
        .get_typed_function(store, name)
        .expect("export")
}

#[test]
fn layout_lists_every_global() {
    let store = Store::default();
    let module = GuestModule::from_wat(&store, GUEST).expect("module");
    let layout = module.layout();
    assert_eq!(layout.memory_export, "memory");
    assert_eq!((layout.memory_minimum, layout.memory_maximum), (1, Some(100)));
    assert_eq!(layout.imported_globals, 1);
    let summary: Vec<_> = layout
        .globals
        .iter()
        .map(|g| (g.index, g.kind, g.mutable, g.export.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Some(GlobalKind::I32), true, None),
            (2, Some(GlobalKind::I64), true, None),
            (3, Some(GlobalKind::F64), true, None),
            (4, Some(GlobalKind::I32), false, None),
            (5, Some(GlobalKind::I32), true, Some("exp")),
            (6, Some(GlobalKind::V128), true, None),
            (7, None, false, None),
        ]
    );
    // Names from the module's name section, exported or not.
    let names: Vec<_> = layout.globals.iter().map(|g| g.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some("counter"),
            Some("sp"),
            Some("f"),
            Some("c"),
            Some("exp"),
            Some("v"),
            Some("r")
        ]
    );
}

#[test]
fn global_labels_prefer_the_export_then_the_name_section() {
    let mut store = Store::default();
    let module = GuestModule::from_wat(&store, GUEST).expect("module");
    let imports = guest_imports(&mut store);
    let guest = Guest::instantiate(&mut store, &module, &imports).expect("instance");
    let labels: Vec<_> = guest.globals().iter().map(|g| g.label()).collect();
    assert_eq!(labels, ["$counter", "$sp", "$f", "exp", "$v"]);
    // Without a name section (the binary stripped of it): indices.
    let wasm = wasmer::wat2wasm(b"(module (memory (export \"memory\") 1) (global (mut i32) (i32.const 0)))")
        .expect("wat");
    let layout = ModuleLayout::parse(&wasm).expect("layout");
    assert_eq!(layout.globals[0].name, None);
    // A malformed name section is skipped, not refused: the module still loads.
    let mut broken = wasm.to_vec();
    broken.extend_from_slice(&[0, 7, 4, b'n', b'a', b'm', b'e', 7, 0xff]);
    let layout = ModuleLayout::parse(&broken).expect("a bad name section is only debug info");
    assert_eq!(layout.globals[0].name, None);
}

#[test]
fn globals_map_to_store_indices_past_other_instances() {
    let (mut store, guest, other) = crowded_store();
    // The store holds: host global 0, OTHER's 2 globals, guest's import k,
    // then the guest's 7 local globals.
    assert_eq!(store.objects_mut().as_u128_globals().len(), 1 + 2 + 1 + 7);
    let indices: Vec<_> = guest.globals().iter().map(|g| (g.index, g.store_index)).collect();
    assert_eq!(indices, [(1, 4), (2, 5), (3, 6), (5, 8), (6, 9)]);
    assert_eq!(
        other.globals().iter().map(|g| g.store_index).collect::<Vec<_>>(),
        [1, 2]
    );

    let mut values = Vec::new();
    guest.read_globals(&mut store, &mut values).expect("read");
    assert_eq!(
        values,
        [5, 77, u128::from(1.5f64.to_bits()), 3, (2u128 << 64) | 1]
    );
    other.read_globals(&mut store, &mut values).expect("read");
    assert_eq!(values, [1111, 2222]);
}

/// Read and write a non-exported mutable global; the guest sees the change
/// and the host sees the guest's.
#[test]
fn non_exported_global_round_trip() {
    let (mut store, guest, other) = crowded_store();
    let get_counter = typed::<(), i32>(&store, &guest, "get_counter");
    let get_sp = typed::<(), i64>(&store, &guest, "get_sp");
    let bump = typed::<(), ()>(&store, &guest, "bump");

    bump.call(&mut store).expect("bump");
    let mut values = Vec::new();
    guest.read_globals(&mut store, &mut values).expect("read");
    assert_eq!(values[0], 6, "host sees the guest's write");

    values[0] = 1000;
    values[1] = (-5i64) as u64 as u128;
    guest.write_globals(&mut store, &values).expect("write");
    assert_eq!(get_counter.call(&mut store).expect("call"), 1000);
    assert_eq!(get_sp.call(&mut store).expect("call"), -5);
    bump.call(&mut store).expect("bump");
    assert_eq!(get_counter.call(&mut store).expect("call"), 1001);

    // The exported one agrees with wasmer's own API.
    let exp = guest.instance().exports.get_global("exp").expect("exp");
    assert_eq!(exp.get(&mut store), Value::I32(3));
    values = vec![0; 5];
    guest.read_globals(&mut store, &mut values).expect("read");
    values[3] = 0xFFFF_FFFF;
    guest.write_globals(&mut store, &values).expect("write");
    assert_eq!(exp.get(&mut store), Value::I32(-1));

    // The other instance is untouched.
    let get_other = typed::<(), i32>(&store, &other, "get");
    assert_eq!(get_other.call(&mut store).expect("call"), 1111);

    assert!(matches!(
        guest.write_globals(&mut store, &[1, 2]),
        Err(GuestError::GlobalCount {
            expected: 5,
            found: 2
        })
    ));
    let mut foreign = Store::default();
    assert!(matches!(
        guest.read_globals(&mut foreign, &mut values),
        Err(GuestError::WrongStore)
    ));
}

#[test]
fn memory_base_is_fixed_across_growth() {
    let (mut store, guest, _) = crowded_store();
    let reservation = guest.reservation();
    assert_eq!(reservation.growable_len, 100 * WASM_PAGE);
    assert_eq!(reservation.mapped_len, (4 << 30) + (4 << 30) + WASM_PAGE);
    let base = guest.memory().view(&store).data_ptr();
    assert_eq!(base as usize, reservation.base);
    assert_eq!(guest.memory_len(&store), WASM_PAGE);

    let grow = typed::<i32, i32>(&store, &guest, "grow");
    assert_eq!(grow.call(&mut store, 9).expect("grow"), 1);
    guest.memory().grow(&mut store, 5).expect("host grow");
    let view = guest.memory().view(&store);
    assert_eq!(view.data_ptr(), base, "data_ptr moved on memory.grow");
    assert_eq!(view.data_size(), 15 * WASM_PAGE as u64);
}

#[test]
fn dirty_tracking_on_a_wasmer_memory() {
    if !crate::dirty::DirtyTracker::probe().is_available()
        && std::env::var_os("REWIND_SKIP_KERNEL_DIRTY").is_some()
    {
        return;
    }
    let (mut store, guest, _) = crowded_store();
    guest.memory().grow(&mut store, 63).expect("grow to 4 MiB");
    let mut tracker = guest.dirty_tracker(&store).expect("tracker");
    let store_fn = typed::<(i32, i32), ()>(&store, &guest, "store");
    let load = typed::<i32, i32>(&store, &guest, "load");
    let mut out = Vec::new();
    guest
        .take_written(&store, &mut tracker, 4096, &mut out)
        .expect("scan");
    assert!(out.is_empty(), "{out:?}");

    // Guest writes.
    store_fn.call(&mut store, 4096 * 3 + 8, 1).expect("store");
    store_fn.call(&mut store, 4096 * 700, 2).expect("store");
    // Host writes through MemoryView.
    guest
        .memory()
        .view(&store)
        .write(4096 * 10 + 4094, &[1, 2, 3, 4])
        .expect("write");
    // Reads (guest and host) do not count.
    assert_eq!(load.call(&mut store, 4096 * 500).expect("load"), 0);
    let mut buf = [0u8; 64];
    guest
        .memory()
        .view(&store)
        .read(4096 * 900, &mut buf)
        .expect("read");

    guest
        .take_written(&store, &mut tracker, 4096, &mut out)
        .expect("scan");
    assert_eq!(out, [3, 10, 11, 700]);
    guest
        .take_written(&store, &mut tracker, 16384, &mut out)
        .expect("scan");
    assert!(out.is_empty());

    // Growth by the guest, then a write in the new part: never lost.
    let grow = typed::<i32, i32>(&store, &guest, "grow");
    assert_eq!(grow.call(&mut store, 2).expect("grow"), 64);
    store_fn
        .call(&mut store, 64 * WASM_PAGE as i32 + 5, 1)
        .expect("store");
    store_fn.call(&mut store, 8, 1).expect("store");
    guest
        .take_written(&store, &mut tracker, 4096, &mut out)
        .expect("scan");
    let first_new = (64 * WASM_PAGE / 4096) as u32;
    assert_eq!(out, [0, first_new], "grown pages within the headroom are exact");
    guest
        .take_written(&store, &mut tracker, 4096, &mut out)
        .expect("scan");
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn refuses_imported_memory() {
    let store = Store::default();
    let err =
        GuestModule::from_wat(&store, r#"(module (import "env" "mem" (memory 1)))"#).expect_err("refused");
    assert!(
        matches!(err, GuestError::ImportedMemory { ref module, ref name } if module == "env" && name == "mem")
    );
}

#[test]
fn refuses_two_memories_and_no_memory() {
    let store = Store::default();
    let err =
        GuestModule::from_wat(&store, "(module (memory (export \"a\") 1) (memory 1))").expect_err("refused");
    assert!(matches!(err, GuestError::MultipleMemories { count: 2 }));
    let err = GuestModule::from_wat(&store, "(module)").expect_err("refused");
    assert!(matches!(err, GuestError::NoMemory));
    let err = GuestModule::from_wat(&store, "(module (memory 1))").expect_err("refused");
    assert!(matches!(err, GuestError::MemoryNotExported));
    let err = GuestModule::from_wat(&store, "(module (memory (export \"m\") i64 1))").expect_err("refused");
    assert!(matches!(err, GuestError::UnsupportedMemory { .. }));
}

#[test]
fn refuses_mutable_tables() {
    let store = Store::default();
    let mem = r#"(memory (export "memory") 1)"#;
    for (op, body) in [
        ("table.set", "i32.const 0 ref.null func table.set $t"),
        ("table.grow", "ref.null func i32.const 1 table.grow $t drop"),
        (
            "table.fill",
            "i32.const 0 ref.null func i32.const 1 table.fill $t",
        ),
        (
            "table.copy",
            "i32.const 0 i32.const 1 i32.const 1 table.copy $t $t",
        ),
        (
            "table.init",
            "i32.const 0 i32.const 0 i32.const 0 table.init $t $e",
        ),
    ] {
        let wat = format!("(module {mem} (table $t 2 funcref) (elem $e func $f) (func $f) (func $g {body}))");
        let err = GuestModule::from_wat(&store, &wat).expect_err(op);
        assert!(
            matches!(err, GuestError::MutableTable { table: 0, how: TableMutation::Instruction { op: o, func: 1 } } if o == op),
            "{op}: {err:?}"
        );
    }
    let err = GuestModule::from_wat(&store, format!("(module {mem} (table (export \"t\") 1 funcref))"))
        .expect_err("exported");
    assert!(matches!(
        err,
        GuestError::MutableTable {
            how: TableMutation::Exported { .. },
            ..
        }
    ));
    let err = GuestModule::from_wat(
        &store,
        format!("(module (import \"env\" \"t\" (table 1 funcref)) {mem})"),
    )
    .expect_err("imported");
    assert!(matches!(
        err,
        GuestError::MutableTable {
            how: TableMutation::Imported { .. },
            ..
        }
    ));
    // A table only read (call_indirect) is fine.
    let ok = format!(
        "(module {mem} (type $v (func)) (table 1 funcref) (elem (i32.const 0) $f) (func $f) (func (export \"c\") i32.const 0 call_indirect (type $v)))"
    );
    GuestModule::from_wat(&store, &ok).expect("read-only table accepted");
}

#[test]
fn refuses_imported_mutable_and_reference_globals() {
    let store = Store::default();
    let mem = r#"(memory (export "memory") 1)"#;
    let err = GuestModule::from_wat(
        &store,
        format!("(module (import \"env\" \"g\" (global (mut i32))) {mem})"),
    )
    .expect_err("refused");
    assert!(matches!(err, GuestError::ImportedMutableGlobal { .. }));
    let err = GuestModule::from_wat(
        &store,
        format!("(module {mem} (global (mut externref) (ref.null extern)))"),
    )
    .expect_err("refused");
    assert!(matches!(err, GuestError::UnsupportedGlobal { index: 0, .. }));
}

#[test]
fn host_function_creating_globals_during_start_does_not_shift_the_mapping() {
    // A start function calls a host import that creates a global in the
    // store: it lands after the instance's own globals.
    let mut store = Store::default();
    let wat = r#"(module
      (import "env" "mk" (func $mk))
      (memory (export "memory") 1)
      (global (mut i32) (i32.const 7))
      (func $start call $mk)
      (start $start))"#;
    let module = GuestModule::from_wat(&store, wat).expect("module");
    let env = wasmer::FunctionEnv::new(&mut store, ());
    let mk = Function::new_typed_with_env(&mut store, &env, |mut env: wasmer::FunctionEnvMut<'_, ()>| {
        let _ = Global::new_mut(&mut env, Value::I32(99));
    });
    let imports = imports! { "env" => { "mk" => mk } };
    let guest = Guest::instantiate(&mut store, &module, &imports).expect("instance");
    let mut values = Vec::new();
    guest.read_globals(&mut store, &mut values).expect("read");
    assert_eq!(values, [7]);
    assert_eq!(store.objects_mut().as_u128_globals().len(), 2);
}

#[test]
#[ignore = "timing printout, run explicitly"]
fn measure_wasmer_costs() {
    use std::time::Instant;
    let n_globals = 232;
    let mut wat = String::from("(module (memory (export \"memory\") 1024)\n");
    for i in 0..n_globals {
        wat.push_str(&format!("(global (mut i32) (i32.const {i}))\n"));
    }
    wat.push_str("(func (export \"store\") (param i32 i32) local.get 0 local.get 1 i32.store))");
    let mut store = Store::default();
    let t = Instant::now();
    let module = GuestModule::from_wat(&store, &wat).expect("module");
    eprintln!("parse+compile ({n_globals} globals): {:?}", t.elapsed());
    let guest = Guest::instantiate(&mut store, &module, &Imports::new()).expect("instance");
    let store_fn = typed::<(i32, i32), ()>(&store, &guest, "store");
    // Populate the 64 MiB as a live guest would.
    for p in 0..(64 << 20) / 4096 {
        store_fn.call(&mut store, p * 4096, 1).expect("store");
    }
    let t = Instant::now();
    let mut tracker = guest.dirty_tracker(&store).expect("tracker");
    eprintln!(
        "dirty_tracker (register {} GiB, protect 64 MiB populated + headroom): {:?}",
        guest.reservation().growable_len >> 30,
        t.elapsed()
    );
    let mut out = Vec::new();
    let mut best = std::time::Duration::MAX;
    for round in 0..20 {
        for i in 0..160 {
            store_fn
                .call(&mut store, (i * 97 + round) % 16384 * 4096, 2)
                .expect("store");
        }
        let t = Instant::now();
        guest
            .take_written(&store, &mut tracker, 4096, &mut out)
            .expect("scan");
        best = best.min(t.elapsed());
        assert_eq!(out.len(), 160);
    }
    eprintln!("wasmer 64 MiB, 160 guest-dirtied pages: take_written best of 20 = {best:?}");
    let mut values = Vec::new();
    let t = Instant::now();
    for _ in 0..1000 {
        guest.read_globals(&mut store, &mut values).expect("read");
    }
    eprintln!("read_globals ({n_globals}): {:?} per call", t.elapsed() / 1000);
    let t = Instant::now();
    for _ in 0..1000 {
        guest.write_globals(&mut store, &values).expect("write");
    }
    eprintln!("write_globals ({n_globals}): {:?} per call", t.elapsed() / 1000);
}
