/* rewind guests: the Lua 5.4 driver (written for rewind; Lua itself is
 * compiled from the lupa sdist by scripts/fetch-guests.sh).
 *
 * step(input): the first call creates the Lua state and loads the
 * workload; every call runs one frame of it: one generation of Conway's
 * game of life on a 48x48 torus, kept in Lua tables, plus a rendered string
 * of the board (garbage for the collector). A non-zero input drops a
 * glider at a position derived from it. */
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

static lua_State *L;
static long long frames;

static const char *WORKLOAD =
    "local W, H = 48, 48\n"
    "local board = {}\n"
    "for y = 1, H do local row = {} for x = 1, W do row[x] = 0 end board[y] = row end\n"
    "local function set(x, y) board[(y - 1) % H + 1][(x - 1) % W + 1] = 1 end\n"
    "local function glider(x, y) set(x+1,y) set(x+2,y+1) set(x,y+2) set(x+1,y+2) set(x+2,y+2) end\n"
    "-- an R-pentomino and a few gliders: thousands of generations of activity\n"
    "set(24,23) set(25,23) set(23,24) set(24,24) set(24,25)\n"
    "glider(2,2) glider(30,5) glider(10,35)\n"
    "generation, population, rendered = 0, 0, ''\n"
    "history = {}\n"
    "function frame(input)\n"
    "  if input ~= 0 then glider(input % W + 1, (input // W) % H + 1) end\n"
    "  local new = {}\n"
    "  local pop = 0\n"
    "  for y = 1, H do\n"
    "    local up, row, down = board[(y - 2) % H + 1], board[y], board[y % H + 1]\n"
    "    local nrow = {}\n"
    "    for x = 1, W do\n"
    "      local l, r = (x - 2) % W + 1, x % W + 1\n"
    "      local n = up[l] + up[x] + up[r] + row[l] + row[r] + down[l] + down[x] + down[r]\n"
    "      local alive = (n == 3 or (n == 2 and row[x] == 1)) and 1 or 0\n"
    "      nrow[x] = alive\n"
    "      pop = pop + alive\n"
    "    end\n"
    "    new[y] = nrow\n"
    "  end\n"
    "  board = new\n"
    "  generation, population = generation + 1, pop\n"
    "  local lines = {}\n"
    "  for y = 1, H do\n"
    "    local cells = {}\n"
    "    for x = 1, W do cells[x] = board[y][x] == 1 and '#' or '.' end\n"
    "    lines[y] = table.concat(cells)\n"
    "  end\n"
    "  rendered = table.concat(lines, '\\n')\n"
    "  history[generation % 64 + 1] = string.format('%d:%d', generation, pop)\n"
    "end\n";

static void open_libs(lua_State *l) {
    luaL_requiref(l, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(l, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(l, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(l, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(l, LUA_COLIBNAME, luaopen_coroutine, 1);
    luaL_requiref(l, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_settop(l, 0);
}

/* wasi-libc's reactor constructors (what `_initialize` runs): called by the
 * first step, so that every state change happens inside a recorded step. */
void __wasm_call_ctors(void);

__attribute__((export_name("step"))) void step(long long input) {
    if (!L) {
        __wasm_call_ctors();
        L = luaL_newstate();
        if (!L) __builtin_trap();
        open_libs(L);
        if (luaL_loadstring(L, WORKLOAD) != LUA_OK) __builtin_trap();
        lua_call(L, 0, 0);
    }
    lua_getglobal(L, "frame");
    lua_pushinteger(L, (lua_Integer)input);
    lua_call(L, 1, 0);
    frames++;
}

/* The generation counter and population, for the host's checks. */
__attribute__((export_name("generation"))) long long generation(void) {
    if (!L) return -1;
    lua_getglobal(L, "generation");
    long long g = (long long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return g;
}
