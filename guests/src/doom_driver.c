/* rewind guests: the Doom driver (written for rewind; doomgeneric itself is
 * compiled from the cydoomgeneric sdist by scripts/fetch-guests.sh, with
 * D_DoomLoop split so that D_DoomTick runs one iteration of the game loop).
 *
 * The platform callbacks keep everything in guest memory: the clock is a
 * counter advanced by the frames (35 per second) and by the game's own
 * sleeps, keys come from the frame's input. So the guest's state is entirely
 * its memory and globals, and a run is a function of its inputs.
 *
 * step(input): the first call initialises Doom with the IWAD at
 * /wad/freedoom1.wad (a read-only directory the host preopens); every call
 * runs one game-loop iteration (one tic). input: up to 4 key events, one
 * per byte pair (low byte: doomkeys.h key code, high byte: 1 = pressed,
 * 2 = released); 0 = no keys, which lets the attract-mode demos play. */
#include <stdint.h>
#include "doomgeneric.h"

void D_DoomTick(void);

#define RESX 320
#define RESY 200

static uint32_t now_ms;
static uint32_t tics;
static int started;
static unsigned char key_queue[16][2];
static unsigned key_head, key_tail;

static void draw_frame(void) {}
static void sleep_ms(uint32_t ms) { now_ms += ms; }
static uint32_t get_ticks_ms(void) { return now_ms; }
static void set_window_title(const char *title) { (void)title; }

static int get_key(int *pressed, unsigned char *key) {
    if (key_head == key_tail) return 0;
    *pressed = key_queue[key_tail % 16][1] == 1;
    *key = key_queue[key_tail % 16][0];
    key_tail++;
    return 1;
}

/* wasi-libc's reactor constructors (what `_initialize` runs): called by the
 * first step, so that every state change happens inside a recorded step. */
void __wasm_call_ctors(void);

__attribute__((export_name("step"))) void step(long long input) {
    if (!started) {
        static char *argv[] = {"doom", "-iwad", "/wad/freedoom1.wad", 0};
        started = 1;
        __wasm_call_ctors();
        dg_Create(RESX, RESY, draw_frame, sleep_ms, get_ticks_ms, get_key, set_window_title);
        dg_main(3, argv);
        return;
    }
    for (int i = 0; i < 4; i++) {
        unsigned event = (unsigned)((unsigned long long)input >> (16 * i)) & 0xffff;
        if (event == 0) continue;
        if (key_head - key_tail < 16) {
            key_queue[key_head % 16][0] = (unsigned char)(event & 0xff);
            key_queue[key_head % 16][1] = (unsigned char)(event >> 8);
            key_head++;
        }
    }
    tics++;
    uint32_t target = (uint32_t)((uint64_t)tics * 1000 / 35) + 1;
    if (now_ms < target) now_ms = target;
    D_DoomTick();
}

/* Where the 32-bit XRGB framebuffer is, and its size, for the host. */
__attribute__((export_name("screen_ptr"))) uint32_t screen_ptr(void) { return (uint32_t)(uintptr_t)DG_ScreenBuffer; }
__attribute__((export_name("screen_width"))) uint32_t screen_width(void) { return RESX; }
__attribute__((export_name("screen_height"))) uint32_t screen_height(void) { return RESY; }

/* i_system.c calls system() (zenity error boxes); WASI has no processes. */
int system(const char *command) {
    (void)command;
    return -1;
}
