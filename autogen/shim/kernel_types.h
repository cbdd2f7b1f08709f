/* Force-included when generating bindings from kernel-internal amdgpu headers, which rely on types the
 * kernel build provides. Only layout-neutral declarations: fixed-width integers and opaque kernel objects
 * that appear in driver-internal structs we filter out of the bindings. */
#ifndef BAREGPU_AUTOGEN_KERNEL_TYPES_H
#define BAREGPU_AUTOGEN_KERNEL_TYPES_H
#include <linux/types.h>
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s8 s8;
typedef __s16 s16;
typedef __s32 s32;
typedef __s64 s64;
typedef __u8 uint8_t;
typedef __u16 uint16_t;
typedef __u32 uint32_t;
typedef __u64 uint64_t;
typedef __s8 int8_t;
typedef __s16 int16_t;
typedef __s32 int32_t;
typedef __s64 int64_t;
typedef _Bool bool;
typedef unsigned long size_t;
/* Driver-internal objects embedded by value in structs the bindings leave out (amdgpu_firmware). */
struct mutex { unsigned long opaque; };
/* include/linux/stddef.h: a flexible array member that may sit alone in a struct or union. */
#define DECLARE_FLEX_ARRAY(TYPE, NAME) struct { struct { } __empty_ ## NAME; TYPE NAME[]; }
#endif
