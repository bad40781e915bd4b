// The qemu port has no real-time clock and no mp_hal_time_ns(), which littlefs needs
// for file modification times: this board's "wall clock" is the time since boot.
#include "py/mphal.h"

uint64_t mp_hal_time_ns(void) {
    return (uint64_t)mp_hal_ticks_ms() * 1000000ULL;
}
