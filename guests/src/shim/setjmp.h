/* rewind guests: a setjmp shim for Debian's wasi-libc, which has no setjmp.
 *
 * Written for rewind (not third-party code). setjmp always "returns 0" and
 * longjmp traps, so a Lua error aborts the step (a wasm trap) instead of
 * unwinding to a pcall. The Lua workload of rewind never raises an error. */
#ifndef REWIND_SETJMP_SHIM_H
#define REWIND_SETJMP_SHIM_H
typedef int jmp_buf[1];
#define setjmp(b) ((void)(b), 0)
#define _setjmp(b) ((void)(b), 0)
#define longjmp(b, v) ((void)(b), (void)(v), __builtin_trap())
#define _longjmp(b, v) ((void)(b), (void)(v), __builtin_trap())
#endif
