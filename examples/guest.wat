;; The built-in guest of `examples/guest.rs`: a tiny game.
;;
;; - A 128 x 128 Game of Life board (double-buffered, 16 KiB each) that the
;;   player seeds with gliders.
;; - 1,024 particles, one per 4 KiB page from 1 MiB on; 1/32 of them move each
;;   frame, so the guest writes a few percent of its pages per frame.
;; - At frame 600 the world grows: memory.grow by 64 wasm pages (4 MiB) and
;;   1,024 more particles come alive in the new memory.
;; - The frame counter, the random generator, the player's position, the
;;   score and the particle count live in NON-EXPORTED mutable globals.
;;
;; ABI: `step(i64)`, the input's low byte = buttons: bit 0 left, 1 right,
;; 2 up, 3 down, 4 fire (plants a glider and kicks the moving particles).
;; Header at address 0: frame, population, particles alive, current board.
(module
  (memory (export "memory") 96 256)

  (global $frame (mut i32) (i32.const 0))
  (global $rng (mut i64) (i64.const 0x2545F4914F6CDD1D))
  (global $px (mut i32) (i32.const 64))
  (global $py (mut i32) (i32.const 64))
  (global $score (mut i64) (i64.const 0))
  (global $alive (mut i32) (i32.const 1024))

  (func $rand (result i32)
    (global.set $rng
      (i64.add (i64.mul (global.get $rng) (i64.const 6364136223846793005))
               (i64.const 1442695040888963407)))
    (i32.wrap_i64 (i64.shr_u (global.get $rng) (i64.const 33))))

  ;; Particle p: 16 bytes (x, y, vx, vy as i32) inside its own 4 KiB page.
  ;; 0..1023 from 1 MiB, 1024..2047 from 6 MiB (the grown memory).
  (func $paddr (param $p i32) (result i32)
    (i32.add
      (i32.add
        (select (i32.const 0x100000) (i32.const 0x200000)
          (i32.lt_u (local.get $p) (i32.const 1024)))
        (i32.shl (local.get $p) (i32.const 12)))
      (i32.and (i32.mul (local.get $p) (i32.const 48)) (i32.const 4080))))

  (func $init_particles (param $from i32) (param $to i32)
    (local $a i32)
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $from) (local.get $to)))
        (local.set $a (call $paddr (local.get $from)))
        (i32.store (local.get $a) (i32.and (call $rand) (i32.const 0xFFFFF)))
        (i32.store offset=4 (local.get $a) (i32.and (call $rand) (i32.const 0xFFFFF)))
        (i32.store offset=8 (local.get $a) (i32.sub (i32.and (call $rand) (i32.const 1023)) (i32.const 512)))
        (i32.store offset=12 (local.get $a) (i32.sub (i32.and (call $rand) (i32.const 1023)) (i32.const 512)))
        (local.set $from (i32.add (local.get $from) (i32.const 1)))
        (br $each))))

  (func $init
    (local $i i32)
    (block $done
      (loop $cells
        (br_if $done (i32.ge_u (local.get $i) (i32.const 16384)))
        (i32.store8 (i32.add (i32.const 0x10000) (local.get $i))
          (i32.lt_u (i32.and (call $rand) (i32.const 255)) (i32.const 77)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $cells)))
    (call $init_particles (i32.const 0) (i32.const 1024))
    (i32.store offset=12 (i32.const 0) (i32.const 0x10000)))
  (start $init)

  ;; One Game of Life generation from $src into $dst (toroidal); returns the population.
  (func $life (param $src i32) (param $dst i32) (result i32)
    (local $x i32) (local $y i32) (local $ym i32) (local $yc i32) (local $yp i32)
    (local $xm i32) (local $xp i32) (local $n i32) (local $new i32) (local $pop i32)
    (loop $rows
      (local.set $ym (i32.add (local.get $src)
        (i32.shl (i32.and (i32.sub (local.get $y) (i32.const 1)) (i32.const 127)) (i32.const 7))))
      (local.set $yc (i32.add (local.get $src) (i32.shl (local.get $y) (i32.const 7))))
      (local.set $yp (i32.add (local.get $src)
        (i32.shl (i32.and (i32.add (local.get $y) (i32.const 1)) (i32.const 127)) (i32.const 7))))
      (local.set $x (i32.const 0))
      (loop $cols
        (local.set $xm (i32.and (i32.sub (local.get $x) (i32.const 1)) (i32.const 127)))
        (local.set $xp (i32.and (i32.add (local.get $x) (i32.const 1)) (i32.const 127)))
        (local.set $n
          (i32.add
            (i32.add
              (i32.add (i32.load8_u (i32.add (local.get $ym) (local.get $xm)))
                       (i32.load8_u (i32.add (local.get $ym) (local.get $x))))
              (i32.add (i32.load8_u (i32.add (local.get $ym) (local.get $xp)))
                       (i32.load8_u (i32.add (local.get $yc) (local.get $xm)))))
            (i32.add
              (i32.add (i32.load8_u (i32.add (local.get $yc) (local.get $xp)))
                       (i32.load8_u (i32.add (local.get $yp) (local.get $xm))))
              (i32.add (i32.load8_u (i32.add (local.get $yp) (local.get $x)))
                       (i32.load8_u (i32.add (local.get $yp) (local.get $xp)))))))
        (local.set $new
          (i32.or
            (i32.eq (local.get $n) (i32.const 3))
            (i32.and (i32.eq (local.get $n) (i32.const 2))
                     (i32.load8_u (i32.add (local.get $yc) (local.get $x))))))
        (i32.store8
          (i32.add (i32.sub (local.get $dst) (local.get $src))
                   (i32.add (local.get $yc) (local.get $x)))
          (local.get $new))
        (local.set $pop (i32.add (local.get $pop) (local.get $new)))
        (local.set $x (i32.add (local.get $x) (i32.const 1)))
        (br_if $cols (i32.lt_u (local.get $x) (i32.const 128))))
      (local.set $y (i32.add (local.get $y) (i32.const 1)))
      (br_if $rows (i32.lt_u (local.get $y) (i32.const 128))))
    (local.get $pop))

  ;; Plants a glider with its corner at the player's cell.
  (func $glider (param $board i32)
    (local $x i32) (local $y i32)
    (local.set $x (global.get $px))
    (local.set $y (global.get $py))
    (call $set (local.get $board) (i32.add (local.get $x) (i32.const 1)) (local.get $y))
    (call $set (local.get $board) (i32.add (local.get $x) (i32.const 2)) (i32.add (local.get $y) (i32.const 1)))
    (call $set (local.get $board) (local.get $x) (i32.add (local.get $y) (i32.const 2)))
    (call $set (local.get $board) (i32.add (local.get $x) (i32.const 1)) (i32.add (local.get $y) (i32.const 2)))
    (call $set (local.get $board) (i32.add (local.get $x) (i32.const 2)) (i32.add (local.get $y) (i32.const 2))))
  (func $set (param $board i32) (param $x i32) (param $y i32)
    (i32.store8
      (i32.add (local.get $board)
        (i32.add (i32.shl (i32.and (local.get $y) (i32.const 127)) (i32.const 7))
                 (i32.and (local.get $x) (i32.const 127))))
      (i32.const 1)))

  ;; Moves 1/32 of the particles; `kick` adds random velocity.
  (func $particles (param $kick i32)
    (local $p i32) (local $a i32) (local $x i32) (local $y i32) (local $vx i32) (local $vy i32)
    (local.set $p (i32.and (global.get $frame) (i32.const 31)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $p) (global.get $alive)))
        (local.set $a (call $paddr (local.get $p)))
        (local.set $x (i32.load (local.get $a)))
        (local.set $y (i32.load offset=4 (local.get $a)))
        (local.set $vx (i32.load offset=8 (local.get $a)))
        (local.set $vy (i32.load offset=12 (local.get $a)))
        (if (local.get $kick)
          (then
            (local.set $vx (i32.add (local.get $vx) (i32.sub (i32.and (call $rand) (i32.const 255)) (i32.const 128))))
            (local.set $vy (i32.add (local.get $vy) (i32.sub (i32.and (call $rand) (i32.const 255)) (i32.const 128))))))
        (local.set $x (i32.add (local.get $x) (local.get $vx)))
        (local.set $y (i32.add (local.get $y) (local.get $vy)))
        (if (i32.gt_u (local.get $x) (i32.const 0xFFFFF))
          (then (local.set $vx (i32.sub (i32.const 0) (local.get $vx)))
                (local.set $x (i32.and (local.get $x) (i32.const 0xFFFFF)))))
        (if (i32.gt_u (local.get $y) (i32.const 0xFFFFF))
          (then (local.set $vy (i32.sub (i32.const 0) (local.get $vy)))
                (local.set $y (i32.and (local.get $y) (i32.const 0xFFFFF)))))
        (i32.store (local.get $a) (local.get $x))
        (i32.store offset=4 (local.get $a) (local.get $y))
        (i32.store offset=8 (local.get $a) (local.get $vx))
        (i32.store offset=12 (local.get $a) (local.get $vy))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $each))))

  (func (export "step") (param $input i64)
    (local $b i32) (local $src i32) (local $dst i32) (local $pop i32) (local $fire i32)
    (local.set $b (i32.wrap_i64 (local.get $input)))
    (global.set $frame (i32.add (global.get $frame) (i32.const 1)))
    ;; The world grows once, at frame 600.
    (if (i32.eq (global.get $frame) (i32.const 600))
      (then
        (if (i32.ge_s (memory.grow (i32.const 64)) (i32.const 0))
          (then
            (call $init_particles (i32.const 1024) (i32.const 2048))
            (global.set $alive (i32.const 2048))))))
    ;; Move the player.
    (global.set $px (i32.and (i32.add (global.get $px)
      (i32.sub (i32.shr_u (i32.and (local.get $b) (i32.const 2)) (i32.const 1))
               (i32.and (local.get $b) (i32.const 1)))) (i32.const 127)))
    (global.set $py (i32.and (i32.add (global.get $py)
      (i32.sub (i32.shr_u (i32.and (local.get $b) (i32.const 8)) (i32.const 3))
               (i32.shr_u (i32.and (local.get $b) (i32.const 4)) (i32.const 2)))) (i32.const 127)))
    (local.set $fire (i32.shr_u (i32.and (local.get $b) (i32.const 16)) (i32.const 4)))
    (local.set $src (i32.load offset=12 (i32.const 0)))
    (local.set $dst (select (i32.const 0x14000) (i32.const 0x10000)
      (i32.eq (local.get $src) (i32.const 0x10000))))
    (if (local.get $fire) (then (call $glider (local.get $src))))
    (local.set $pop (call $life (local.get $src) (local.get $dst)))
    (call $particles (local.get $fire))
    ;; Score: the live cells under the player, weighted by the frame.
    (global.set $score (i64.add (global.get $score)
      (i64.extend_i32_u (i32.mul
        (i32.load8_u (i32.add (local.get $dst)
          (i32.add (i32.shl (global.get $py) (i32.const 7)) (global.get $px))))
        (global.get $frame)))))
    (i32.store (i32.const 0) (global.get $frame))
    (i32.store offset=4 (i32.const 0) (local.get $pop))
    (i32.store offset=8 (i32.const 0) (global.get $alive))
    (i32.store offset=12 (i32.const 0) (local.get $dst)))
)
