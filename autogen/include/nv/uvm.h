/* UVM userspace interface: /dev/nvidia-uvm ioctls and their parameter blocks (the subset a compute driver uses).
 * On Linux UVM_IOCTL_BASE(i) is i: the request number is the plain command number, not an _IOC encoding.
 * Each declaration names its open-gpu-kernel-modules file (version pinned in autogen/include/nv/VERSION). */
#ifndef BAREGPU_NV_UVM_H
#define BAREGPU_NV_UVM_H

#include "nvtypes.h"

#define UVM_INITIALIZE 0x30000001                /* kernel-open/nvidia-uvm/uvm_linux_ioctl.h */
#define UVM_DEINITIALIZE 0x30000002              /* kernel-open/nvidia-uvm/uvm_linux_ioctl.h */
#define UVM_CREATE_RANGE_GROUP 23                /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_DESTROY_RANGE_GROUP 24               /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_REGISTER_GPU_VASPACE 25              /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_UNREGISTER_GPU_VASPACE 26            /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_REGISTER_CHANNEL 27                  /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_UNREGISTER_CHANNEL 28                /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_MAP_EXTERNAL_ALLOCATION 33           /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_FREE 34                              /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_REGISTER_GPU 37                      /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_UNREGISTER_GPU 38                    /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_PAGEABLE_MEM_ACCESS 39               /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_SET_PREFERRED_LOCATION 42            /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_MIGRATE 51                           /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_UNMAP_EXTERNAL 66                    /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_CREATE_EXTERNAL_RANGE 73             /* kernel-open/nvidia-uvm/uvm_ioctl.h */
#define UVM_MM_INITIALIZE 75                     /* kernel-open/nvidia-uvm/uvm_ioctl.h */

#define UVM_PARENT_ID_MAX_SUB_PROCESSORS 8       /* kernel-open/nvidia-uvm/uvm_types.h */
#define UVM_MAX_GPUS (NV_MAX_DEVICES * UVM_PARENT_ID_MAX_SUB_PROCESSORS)  /* kernel-open/nvidia-uvm/uvm_types.h */

/* values of UvmGpuMappingAttributes fields: kernel-open/common/inc/nv_uvm_user_types.h (UvmGpuMappingType, UvmGpuCachingType, ...) */
#define UvmGpuMappingTypeDefault 0               /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuMappingTypeReadWriteAtomic 1       /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuMappingTypeReadWrite 2             /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuMappingTypeReadOnly 3              /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuCachingTypeDefault 0               /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuCachingTypeForceUncached 1         /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuCachingTypeForceCached 2           /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuFormatTypeDefault 0                /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuFormatElementBitsDefault 0         /* kernel-open/common/inc/nv_uvm_user_types.h */
#define UvmGpuCompressionTypeDefault 0           /* kernel-open/common/inc/nv_uvm_user_types.h */

/* kernel-open/nvidia-uvm/uvm_types.h */
typedef struct UvmGpuMappingAttributes {
    NvProcessorUuid gpuUuid;
    NvU32 gpuMappingType;
    NvU32 gpuCachingType;
    NvU32 gpuFormatType;
    NvU32 gpuElementBits;
    NvU32 gpuCompressionType;
} UvmGpuMappingAttributes;

/* kernel-open/nvidia-uvm/uvm_linux_ioctl.h */
typedef struct UVM_INITIALIZE_PARAMS {
    NvU64 flags __attribute__((aligned(8)));
    NV_STATUS rmStatus;
} UVM_INITIALIZE_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_MM_INITIALIZE_PARAMS {
    NvS32 uvmFd;
    NV_STATUS rmStatus;
} UVM_MM_INITIALIZE_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_REGISTER_GPU_PARAMS {
    NvProcessorUuid gpu_uuid;
    NvBool numaEnabled;
    NvS32 numaNodeId;
    NvS32 rmCtrlFd;
    NvHandle hClient;
    NvHandle hSmcPartRef;
    NV_STATUS rmStatus;
} UVM_REGISTER_GPU_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_UNREGISTER_GPU_PARAMS {
    NvProcessorUuid gpu_uuid;
    NV_STATUS rmStatus;
} UVM_UNREGISTER_GPU_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_REGISTER_GPU_VASPACE_PARAMS {
    NvProcessorUuid gpuUuid;
    NvS32 rmCtrlFd;
    NvHandle hClient;
    NvHandle hVaSpace;
    NV_STATUS rmStatus;
} UVM_REGISTER_GPU_VASPACE_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_CREATE_EXTERNAL_RANGE_PARAMS {
    NvU64 base __attribute__((aligned(8)));
    NvU64 length __attribute__((aligned(8)));
    NV_STATUS rmStatus;
} UVM_CREATE_EXTERNAL_RANGE_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_MAP_EXTERNAL_ALLOCATION_PARAMS {
    NvU64 base __attribute__((aligned(8)));
    NvU64 length __attribute__((aligned(8)));
    NvU64 offset __attribute__((aligned(8)));
    UvmGpuMappingAttributes perGpuAttributes[UVM_MAX_GPUS];
    NvU64 gpuAttributesCount __attribute__((aligned(8)));
    NvS32 rmCtrlFd;
    NvU32 hClient;
    NvU32 hMemory;
    NV_STATUS rmStatus;
} UVM_MAP_EXTERNAL_ALLOCATION_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_FREE_PARAMS {
    NvU64 base __attribute__((aligned(8)));
    NvU64 length __attribute__((aligned(8)));
    NV_STATUS rmStatus;
} UVM_FREE_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_UNMAP_EXTERNAL_PARAMS {
    NvU64 base __attribute__((aligned(8)));
    NvU64 length __attribute__((aligned(8)));
    NvProcessorUuid gpuUuid;
    NV_STATUS rmStatus;
} UVM_UNMAP_EXTERNAL_PARAMS;

/* kernel-open/nvidia-uvm/uvm_ioctl.h */
typedef struct UVM_PAGEABLE_MEM_ACCESS_PARAMS {
    NvBool pageableMemAccess;
    NV_STATUS rmStatus;
} UVM_PAGEABLE_MEM_ACCESS_PARAMS;

/* added for the emulated UVM (emu/nv/uvm.py): UVM_INITIALIZE flags */
#define UVM_INIT_FLAGS_DISABLE_HMM 0x1                 /* kernel-open/nvidia-uvm/uvm_types.h */
#define UVM_INIT_FLAGS_MULTI_PROCESS_SHARING_MODE 0x2  /* kernel-open/nvidia-uvm/uvm_types.h */
#define UVM_INIT_FLAGS_MASK 0x3                        /* kernel-open/nvidia-uvm/uvm_types.h */

#endif
