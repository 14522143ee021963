//! WAT guests of the tests.

/// Word ABI (`step(i64)`). State in memory and in non-exported mutable
/// globals of every numeric type. Input byte 0 is an opcode:
/// - `0xFE`: grow memory by input byte 1 pages (before the usual work);
/// - `0xFF`: do all the usual work (globals, memory, a 1-page growth), then trap;
/// - `0xFD`: write byte 1 to every 4 KiB page of memory (a hostile writer);
/// - anything else: the usual work only.
///
/// The usual work: bump the globals, mix the input into `$acc`, write `$acc`
/// at three addresses derived from it and `$tick` at address 0.
pub const COUNTER: &str = r#"
(module
  (memory (export "memory") 2 64)
  (global $tick (mut i32) (i32.const 0))
  (global $acc (mut i64) (i64.const 1))
  (global $f (mut f64) (f64.const 0.5))
  (global $g (mut f32) (f32.const 1.0))
  (global $v (mut v128) (v128.const i64x2 0 0))
  (global $score (export "score") (mut i32) (i32.const 0))
  (func $addr (param $shift i64) (result i32)
    ;; an 8-aligned address in [8, memory bytes - 8)
    (i32.add (i32.const 8)
      (i32.shl
        (i32.wrap_i64
          (i64.rem_u
            (i64.shr_u (global.get $acc) (local.get $shift))
            (i64.extend_i32_u
              (i32.sub (i32.shl (memory.size) (i32.const 13)) (i32.const 2)))))
        (i32.const 3))))
  (func $work (param $in i64)
    (global.set $tick (i32.add (global.get $tick) (i32.const 1)))
    (global.set $acc
      (i64.add (i64.mul (global.get $acc) (i64.const 6364136223846793005))
               (i64.add (local.get $in) (i64.const 1442695040888963407))))
    (global.set $f (f64.add (global.get $f) (f64.const 0.25)))
    (global.set $g (f32.mul (global.get $g) (f32.const 1.0009765625)))
    (global.set $v (i64x2.add (global.get $v) (i64x2.splat (global.get $acc))))
    (global.set $score (i32.add (global.get $score) (i32.wrap_i64 (local.get $in))))
    (i64.store (call $addr (i64.const 17)) (global.get $acc))
    (i64.store (call $addr (i64.const 29)) (local.get $in))
    (i64.store (call $addr (i64.const 41)) (i64.extend_i32_u (global.get $tick)))
    (i32.store (i32.const 0) (global.get $tick)))
  (func (export "step") (param $in i64)
    (local $op i32) (local $i i32) (local $end i32)
    (local.set $op (i32.and (i32.wrap_i64 (local.get $in)) (i32.const 255)))
    (if (i32.eq (local.get $op) (i32.const 0xFE))
      (then
        (drop (memory.grow
          (i32.and (i32.wrap_i64 (i64.shr_u (local.get $in) (i64.const 8))) (i32.const 255))))))
    (if (i32.eq (local.get $op) (i32.const 0xFD))
      (then
        (local.set $end (i32.shl (memory.size) (i32.const 16)))
        (local.set $i (i32.const 0))
        (block $done
          (loop $pages
            (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
            (i32.store8 (i32.add (local.get $i) (i32.const 100))
              (i32.wrap_i64 (i64.shr_u (local.get $in) (i64.const 8))))
            (local.set $i (i32.add (local.get $i) (i32.const 4096)))
            (br $pages)))))
    (call $work (local.get $in))
    (if (i32.eq (local.get $op) (i32.const 0xFF))
      (then
        (drop (memory.grow (i32.const 1)))
        (i64.store (i32.const 64) (i64.const -1))
        unreachable)))
  (func (export "size") (result i32) memory.size)
  (func (export "tick") (result i32) global.get $tick)
  (func (export "acc") (result i64) global.get $acc)
)
"#;

/// Buffer ABI (`step(i32 len)`, input at `input_ptr`): sums the input bytes
/// into a non-exported global and appends them to a log in memory.
pub const BUFFER: &str = r#"
(module
  (memory (export "memory") 1)
  (global (export "input_ptr") i32 (i32.const 1024))
  (global (export "input_cap") i32 (i32.const 64))
  (global $sum (mut i32) (i32.const 0))
  (global $log (mut i32) (i32.const 8192))
  (func (export "step") (param $len i32)
    (local $i i32)
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (global.set $sum (i32.add (global.get $sum)
          (i32.load8_u (i32.add (i32.const 1024) (local.get $i)))))
        (i32.store8 (global.get $log) (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (global.set $log (i32.add (global.get $log) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.store (i32.const 0) (global.get $sum)))
  (func (export "sum") (result i32) global.get $sum)
)
"#;

/// A module that imports its memory.
pub const IMPORTED_MEMORY: &str = r#"
(module
  (import "env" "memory" (memory 1))
  (func (export "step") (param i64)))
"#;

/// A module with two memories (multi-memory).
pub const TWO_MEMORIES: &str = r#"
(module
  (memory (export "memory") 1)
  (memory (export "other") 1)
  (func (export "step") (param i64)))
"#;

/// A module whose table the guest changes.
pub const MUTABLE_TABLE: &str = r#"
(module
  (memory (export "memory") 1)
  (table 2 funcref)
  (func $f)
  (func (export "step") (param i64)
    (table.set (i32.const 0) (ref.func $f)))
  (elem declare func $f))
"#;

/// Input of the counter guest: the usual work with a value.
pub fn work(value: u64) -> [u8; 8] {
    (value << 8 | 0x01).to_le_bytes()
}

/// Input of the counter guest: grow by `pages` first.
pub fn grow(pages: u8, value: u64) -> [u8; 8] {
    (value << 16 | u64::from(pages) << 8 | 0xFE).to_le_bytes()
}

/// Input of the counter guest: do the work, grow, then trap.
pub fn trap() -> [u8; 8] {
    0xFFu64.to_le_bytes()
}

/// Input of the counter guest: write `byte` into every page.
pub fn scribble(byte: u8) -> [u8; 8] {
    (u64::from(byte) << 8 | 0xFD).to_le_bytes()
}

/// No step export: a library whose frames the host drives. `world_new`
/// allocates a 16 KiB world at 64 KiB (pages 16..20 of 4 KiB) and writes its
/// state; `world_step(world, dt)` advances the state and writes one word in
/// each of the world's four pages; `dt = 255` does that, then traps.
pub const HOST_DRIVEN: &str = r#"
(module
  (memory (export "memory") 4)
  (global $next (mut i32) (i32.const 65536))
  (func (export "world_new") (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (i32.const 16384)))
    (i64.store (local.get $p) (i64.const 7))
    (local.get $p))
  (func (export "world_step") (param $w i32) (param $dt i64)
    (local $k i32) (local $v i64)
    (local.set $v
      (i64.add (i64.mul (i64.load (local.get $w)) (i64.const 6364136223846793005))
               (local.get $dt)))
    (loop $pages
      (i64.store (i32.add (local.get $w) (i32.mul (local.get $k) (i32.const 4096)))
                 (i64.add (local.get $v) (i64.extend_i32_u (local.get $k))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $pages (i32.lt_u (local.get $k) (i32.const 4))))
    (if (i64.eq (local.get $dt) (i64.const 255)) (then unreachable)))
)
"#;

/// Word ABI: adds the input to a counter in memory (and a non-exported
/// global), writing a few pages; input 0xDEAD loops forever after writing
/// (a hostile or buggy frame); 0xBEEF grows memory by one page first.
/// `spin()` loops forever too (for a setup).
pub const LOOPER: &str = r#"
(module
  (memory (export "memory") 1)
  (global $sum (mut i64) (i64.const 0))
  (func $forever (loop $l (br $l)))
  (func (export "spin") (call $forever))
  (func (export "step") (param $in i64)
    (global.set $sum (i64.add (global.get $sum) (local.get $in)))
    (i64.store (i32.const 0) (global.get $sum))
    (i64.store (i32.const 8192) (local.get $in))
    (if (i64.eq (local.get $in) (i64.const 0xDEAD)) (then (call $forever)))
    (if (i64.eq (local.get $in) (i64.const 0xBEEF))
      (then (drop (memory.grow (i32.const 1))) (call $forever))))
)
"#;
