/* Basic RM types shared by the other nv/*.h headers (x86-64 / aarch64 LP64 layouts only).
 * Sources (open-gpu-kernel-modules, version in autogen/include/nv/VERSION), per line below. */
#ifndef BAREGPU_NV_NVTYPES_H
#define BAREGPU_NV_NVTYPES_H

typedef unsigned char NvU8;        /* src/common/sdk/nvidia/inc/nvtypes.h */
typedef unsigned short NvU16;      /* src/common/sdk/nvidia/inc/nvtypes.h */
typedef unsigned int NvU32;        /* src/common/sdk/nvidia/inc/nvtypes.h */
typedef int NvS32;                 /* src/common/sdk/nvidia/inc/nvtypes.h */
typedef unsigned int NvV32;        /* src/common/sdk/nvidia/inc/nvtypes.h: "void" 32-bit, enumerated or fields */
typedef unsigned long long NvU64;  /* src/common/sdk/nvidia/inc/nvtypes.h */
/* nvtypes.h declares NvP64 as void* on 64-bit builds; it has the size and alignment of NvU64 there, and we hand
 * user addresses to RM as integers, so it is NvU64 here (same ABI). */
typedef NvU64 NvP64;               /* src/common/sdk/nvidia/inc/nvtypes.h */
typedef NvU8 NvBool;               /* src/common/sdk/nvidia/inc/nvtypes.h */
typedef NvU32 NvHandle;            /* src/common/sdk/nvidia/inc/nvtypes.h */
typedef NvU32 NV_STATUS;           /* src/common/sdk/nvidia/inc/nvstatus.h */

#define NV_TRUE 1                  /* src/common/sdk/nvidia/inc/nvtypes.h */
#define NV_FALSE 0                 /* src/common/sdk/nvidia/inc/nvtypes.h */

#define NV_MAX_DEVICES 32          /* src/common/sdk/nvidia/inc/nvlimits.h */
#define NV_MAX_SUBDEVICES 8        /* src/common/sdk/nvidia/inc/nvlimits.h */

/* A GPU UUID as RM and UVM pass it: 16 raw bytes (NvUuid, typedef'd to NvProcessorUuid).
 * kernel-open/common/inc/nvCpuUuid.h */
#define NV_UUID_LEN 16             /* kernel-open/common/inc/nvCpuUuid.h */
typedef struct NvProcessorUuid {
    NvU8 uuid[NV_UUID_LEN];
} NvProcessorUuid;

/* Status codes RM returns in the status fields (a subset). src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_OK 0x00000000  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_GENERIC 0x0000FFFF  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_ARGUMENT 0x0000001F  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_CLASS 0x00000022  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_CLIENT 0x00000023  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_COMMAND 0x00000024  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_OBJECT 0x00000031  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_OBJECT_HANDLE 0x00000033  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_OBJECT_NEW 0x00000034  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_OBJECT_PARENT 0x00000036  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_PARAM_STRUCT 0x0000003A  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_PARAMETER 0x0000003B  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_STATE 0x00000040  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_ADDRESS 0x0000001E  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_LIMIT 0x0000002E  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_FLAGS 0x00000029  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INSUFFICIENT_RESOURCES 0x0000001A  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_NO_MEMORY 0x00000051  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_NOT_SUPPORTED 0x00000056  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_OBJECT_NOT_FOUND 0x00000057  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INSERT_DUPLICATE_NAME 0x00000019  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_DEVICE 0x00000026  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_OPERATING_SYSTEM 0x00000059  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INSUFFICIENT_PERMISSIONS 0x0000001B  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_IN_USE 0x00000017  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_BUFFER_TOO_SMALL 0x00000002  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_TIMEOUT 0x00000065  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_ILLEGAL_ACTION 0x00000016  /* src/common/sdk/nvidia/inc/nvstatuscodes.h */

#endif
