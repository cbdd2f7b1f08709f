/* RM (resource manager) userspace interface: /dev/nvidiactl and /dev/nvidiaN escapes, the NVOS parameter blocks,
 * the allocation parameters of the classes a compute driver allocates, and the RM controls it issues.
 * Written for baregpu from public facts; each declaration names the open-gpu-kernel-modules file it comes from
 * (paths relative to that repository; version pinned in autogen/include/nv/VERSION). */
#ifndef BAREGPU_NV_RM_H
#define BAREGPU_NV_RM_H

#include <linux/ioctl.h>
#include "nvtypes.h"

/* ---- escape numbers: ioctl nr on /dev/nvidiactl and /dev/nvidiaN ---- */
#define NV_IOCTL_MAGIC 'F'                       /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_IOCTL_BASE 200                        /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_CARD_INFO (NV_IOCTL_BASE + 0)     /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_REGISTER_FD (NV_IOCTL_BASE + 1)   /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_ALLOC_OS_EVENT (NV_IOCTL_BASE + 6)      /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_FREE_OS_EVENT (NV_IOCTL_BASE + 7)       /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_STATUS_CODE (NV_IOCTL_BASE + 9)         /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_CHECK_VERSION_STR (NV_IOCTL_BASE + 10)  /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_IOCTL_XFER_CMD (NV_IOCTL_BASE + 11)     /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_ATTACH_GPUS_TO_FD (NV_IOCTL_BASE + 12)  /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_SYS_PARAMS (NV_IOCTL_BASE + 14)         /* kernel-open/common/inc/nv-ioctl-numbers.h */
#define NV_ESC_WAIT_OPEN_COMPLETE (NV_IOCTL_BASE + 18) /* kernel-open/common/inc/nv-ioctl-numbers.h */

#define NV_ESC_RM_ALLOC_MEMORY 0x27              /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_ALLOC_OBJECT 0x28              /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_FREE 0x29                      /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_CONTROL 0x2A                   /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_ALLOC 0x2B                     /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_DUP_OBJECT 0x34                /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_VID_HEAP_CONTROL 0x4A          /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_MAP_MEMORY 0x4E                /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_UNMAP_MEMORY 0x4F              /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_MAP_MEMORY_DMA 0x57            /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_UNMAP_MEMORY_DMA 0x58          /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV_ESC_RM_UPDATE_DEVICE_MAPPING_INFO 0x5E /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */

/* ---- parameter blocks of the escapes ---- */
/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_FREE */
typedef struct NVOS00_PARAMETERS {
    NvHandle hRoot;
    NvHandle hObjectParent;
    NvHandle hObjectOld;
    NvV32 status;
} NVOS00_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_ALLOC_MEMORY (wrapped with the fd below) */
typedef struct NVOS02_PARAMETERS {
    NvHandle hRoot;
    NvHandle hObjectParent;
    NvHandle hObjectNew;
    NvV32 hClass;
    NvV32 flags;
    NvP64 pMemory __attribute__((aligned(8)));
    NvU64 limit __attribute__((aligned(8)));
    NvV32 status;
} NVOS02_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_ALLOC, short form */
typedef struct NVOS21_PARAMETERS {
    NvHandle hRoot;
    NvHandle hObjectParent;
    NvHandle hObjectNew;
    NvV32 hClass;
    NvP64 pAllocParms __attribute__((aligned(8)));
    NvU32 paramsSize;
    NvV32 status;
} NVOS21_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_ALLOC, long form (RM tells the two apart by the ioctl size) */
typedef struct NVOS64_PARAMETERS {
    NvHandle hRoot;
    NvHandle hObjectParent;
    NvHandle hObjectNew;
    NvV32 hClass;
    NvP64 pAllocParms __attribute__((aligned(8)));
    NvP64 pRightsRequested __attribute__((aligned(8)));
    NvU32 paramsSize;
    NvU32 flags;
    NvV32 status;
} NVOS64_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_MAP_MEMORY (wrapped with the fd below) */
typedef struct NVOS33_PARAMETERS {
    NvHandle hClient;
    NvHandle hDevice;
    NvHandle hMemory;
    NvU64 offset __attribute__((aligned(8)));
    NvU64 length __attribute__((aligned(8)));
    NvP64 pLinearAddress __attribute__((aligned(8)));
    NvU32 status;
    NvU32 flags;
} NVOS33_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_CONTROL */
typedef struct NVOS54_PARAMETERS {
    NvHandle hClient;
    NvHandle hObject;
    NvV32 cmd;
    NvU32 flags;
    NvP64 params __attribute__((aligned(8)));
    NvU32 paramsSize;
    NvV32 status;
} NVOS54_PARAMETERS;

/* src/nvidia/arch/nvalloc/unix/include/nv-unix-nvos-params-wrappers.h */
typedef struct nv_ioctl_nvos02_parameters_with_fd {
    NVOS02_PARAMETERS params;
    int fd;
} nv_ioctl_nvos02_parameters_with_fd;

/* src/nvidia/arch/nvalloc/unix/include/nv-unix-nvos-params-wrappers.h */
typedef struct nv_ioctl_nvos33_parameters_with_fd {
    NVOS33_PARAMETERS params;
    int fd;
} nv_ioctl_nvos33_parameters_with_fd;

/* kernel-open/common/inc/nv-ioctl.h */
typedef struct nv_pci_info {
    NvU32 domain;
    NvU8 bus;
    NvU8 slot;
    NvU8 function;
    NvU16 vendor_id;
    NvU16 device_id;
} nv_pci_info_t;

/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_CARD_INFO fills an array of these, one per possible GPU */
typedef struct nv_ioctl_card_info {
    NvBool valid;
    nv_pci_info_t pci_info;
    NvU32 gpu_id;
    NvU16 interrupt_line;
    NvU64 reg_address __attribute__((aligned(8)));
    NvU64 reg_size __attribute__((aligned(8)));
    NvU64 fb_address __attribute__((aligned(8)));
    NvU64 fb_size __attribute__((aligned(8)));
    NvU32 minor_number;
    NvU8 dev_name[10];
} nv_ioctl_card_info_t;

/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_IOCTL_XFER_CMD, for parameter blocks too large for the ioctl size */
typedef struct nv_ioctl_xfer {
    NvU32 cmd;
    NvU32 size;
    NvP64 ptr __attribute__((aligned(8)));
} nv_ioctl_xfer_t;

/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_ALLOC_OS_EVENT / NV_ESC_FREE_OS_EVENT */
typedef struct nv_ioctl_alloc_os_event {
    NvHandle hClient;
    NvHandle hDevice;
    NvU32 fd;
    NvU32 Status;
} nv_ioctl_alloc_os_event_t;

/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_CHECK_VERSION_STR */
#define NV_RM_API_VERSION_STRING_LENGTH 64       /* kernel-open/common/inc/nv-ioctl.h */
#define NV_RM_API_VERSION_CMD_STRICT 0           /* kernel-open/common/inc/nv-ioctl.h */
#define NV_RM_API_VERSION_CMD_RELAXED '1'        /* kernel-open/common/inc/nv-ioctl.h */
#define NV_RM_API_VERSION_CMD_QUERY '2'          /* kernel-open/common/inc/nv-ioctl.h */
#define NV_RM_API_VERSION_REPLY_UNRECOGNIZED 0   /* kernel-open/common/inc/nv-ioctl.h */
#define NV_RM_API_VERSION_REPLY_RECOGNIZED 1     /* kernel-open/common/inc/nv-ioctl.h */
typedef struct nv_ioctl_rm_api_version {
    NvU32 cmd;
    NvU32 reply;
    char versionString[NV_RM_API_VERSION_STRING_LENGTH];
} nv_ioctl_rm_api_version_t;

/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_REGISTER_FD, issued on /dev/nvidiaN with the nvidiactl fd */
typedef struct nv_ioctl_register_fd {
    int ctl_fd;
} nv_ioctl_register_fd_t;

/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_SYS_PARAMS */
typedef struct nv_ioctl_sys_params {
    NvU64 memblock_size __attribute__((aligned(8)));
} nv_ioctl_sys_params_t;

/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_WAIT_OPEN_COMPLETE */
typedef struct nv_ioctl_wait_open_complete {
    int rc;
    NvU32 adapterStatus;
} nv_ioctl_wait_open_complete_t;

/* ---- ioctl request numbers (ours): nvidia_ioctl in kernel-open/nvidia/nv.c takes the escape from _IOC_NR(cmd)
 * and the parameter size from _IOC_SIZE(cmd); userspace sends _IOWR(NV_IOCTL_MAGIC, escape, parameters). ---- */
#define NV_IOC_RM_ALLOC _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_ALLOC, NVOS64_PARAMETERS)
#define NV_IOC_RM_ALLOC_NVOS21 _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_ALLOC, NVOS21_PARAMETERS)
#define NV_IOC_RM_CONTROL _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_CONTROL, NVOS54_PARAMETERS)
#define NV_IOC_RM_FREE _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_FREE, NVOS00_PARAMETERS)
#define NV_IOC_RM_MAP_MEMORY _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_MAP_MEMORY, nv_ioctl_nvos33_parameters_with_fd)
#define NV_IOC_RM_ALLOC_MEMORY _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_ALLOC_MEMORY, nv_ioctl_nvos02_parameters_with_fd)
#define NV_IOC_REGISTER_FD _IOWR(NV_IOCTL_MAGIC, NV_ESC_REGISTER_FD, nv_ioctl_register_fd_t)
#define NV_IOC_ALLOC_OS_EVENT _IOWR(NV_IOCTL_MAGIC, NV_ESC_ALLOC_OS_EVENT, nv_ioctl_alloc_os_event_t)
#define NV_IOC_CHECK_VERSION_STR _IOWR(NV_IOCTL_MAGIC, NV_ESC_CHECK_VERSION_STR, nv_ioctl_rm_api_version_t)
#define NV_IOC_IOCTL_XFER_CMD _IOWR(NV_IOCTL_MAGIC, NV_ESC_IOCTL_XFER_CMD, nv_ioctl_xfer_t)
#define NV_IOC_SYS_PARAMS _IOWR(NV_IOCTL_MAGIC, NV_ESC_SYS_PARAMS, nv_ioctl_sys_params_t)
#define NV_IOC_WAIT_OPEN_COMPLETE _IOWR(NV_IOCTL_MAGIC, NV_ESC_WAIT_OPEN_COMPLETE, nv_ioctl_wait_open_complete_t)

/* ---- flags of the NVOS blocks and of NV_MEMORY_ALLOCATION_PARAMS: fields as _SHIFT/_WIDTH (upstream hi:lo) ---- */
#define NVOS02_FLAGS_PHYSICALITY_SHIFT 4  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_PHYSICALITY 7:4 */
#define NVOS02_FLAGS_PHYSICALITY_WIDTH 4
#define NVOS02_FLAGS_PHYSICALITY_CONTIGUOUS 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_PHYSICALITY_NONCONTIGUOUS 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_LOCATION_SHIFT 8  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_LOCATION 11:8 */
#define NVOS02_FLAGS_LOCATION_WIDTH 4
#define NVOS02_FLAGS_LOCATION_PCI 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_LOCATION_VIDMEM 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_COHERENCY_SHIFT 12  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_COHERENCY 15:12 */
#define NVOS02_FLAGS_COHERENCY_WIDTH 4
#define NVOS02_FLAGS_COHERENCY_UNCACHED 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_COHERENCY_CACHED 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_COHERENCY_WRITE_COMBINE 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_COHERENCY_WRITE_THROUGH 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_COHERENCY_WRITE_PROTECT 0x00000004  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_COHERENCY_WRITE_BACK 0x00000005  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_SHIFT 16  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_ALLOC 17:16 */
#define NVOS02_FLAGS_ALLOC_WIDTH 2
#define NVOS02_FLAGS_ALLOC_NONE 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_NISO_DISPLAY_SHIFT 20  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_ALLOC_NISO_DISPLAY 20:20 */
#define NVOS02_FLAGS_ALLOC_NISO_DISPLAY_WIDTH 1
#define NVOS02_FLAGS_ALLOC_NISO_DISPLAY_NO 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_NISO_DISPLAY_YES 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_USER_READ_ONLY_SHIFT 21  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_ALLOC_USER_READ_ONLY 21:21 */
#define NVOS02_FLAGS_ALLOC_USER_READ_ONLY_WIDTH 1
#define NVOS02_FLAGS_ALLOC_USER_READ_ONLY_NO 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_USER_READ_ONLY_YES 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_DEVICE_READ_ONLY_SHIFT 22  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_ALLOC_DEVICE_READ_ONLY 22:22 */
#define NVOS02_FLAGS_ALLOC_DEVICE_READ_ONLY_WIDTH 1
#define NVOS02_FLAGS_ALLOC_DEVICE_READ_ONLY_NO 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_DEVICE_READ_ONLY_YES 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_ALLOC_TYPE_SYNCPOINT_SHIFT 24  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_ALLOC_TYPE_SYNCPOINT 24:24 */
#define NVOS02_FLAGS_ALLOC_TYPE_SYNCPOINT_WIDTH 1
#define NVOS02_FLAGS_ALLOC_TYPE_SYNCPOINT_APERTURE 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_MAPPING_SHIFT 30  /* src/common/sdk/nvidia/inc/nvos.h: NVOS02_FLAGS_MAPPING 31:30 */
#define NVOS02_FLAGS_MAPPING_WIDTH 2
#define NVOS02_FLAGS_MAPPING_DEFAULT 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_MAPPING_NO_MAP 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS02_FLAGS_MAPPING_NEVER_MAP 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_TYPE_IMAGE 0  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PAGE_SIZE_SHIFT 23  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR_PAGE_SIZE 24:23 */
#define NVOS32_ATTR_PAGE_SIZE_WIDTH 2
#define NVOS32_ATTR_PAGE_SIZE_DEFAULT 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PAGE_SIZE_4KB 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PAGE_SIZE_BIG 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PAGE_SIZE_HUGE 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_LOCATION_SHIFT 25  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR_LOCATION 26:25 */
#define NVOS32_ATTR_LOCATION_WIDTH 2
#define NVOS32_ATTR_LOCATION_VIDMEM 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_LOCATION_PCI 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_LOCATION_ANY 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PHYSICALITY_SHIFT 27  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR_PHYSICALITY 28:27 */
#define NVOS32_ATTR_PHYSICALITY_WIDTH 2
#define NVOS32_ATTR_PHYSICALITY_DEFAULT 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PHYSICALITY_NONCONTIGUOUS 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PHYSICALITY_CONTIGUOUS 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_PHYSICALITY_ALLOW_NONCONTIGUOUS 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_COHERENCY_SHIFT 29  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR_COHERENCY 31:29 */
#define NVOS32_ATTR_COHERENCY_WIDTH 3
#define NVOS32_ATTR_COHERENCY_UNCACHED 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_COHERENCY_CACHED 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_COHERENCY_WRITE_COMBINE 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_COHERENCY_WRITE_THROUGH 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_COHERENCY_WRITE_PROTECT 0x00000004  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR_COHERENCY_WRITE_BACK 0x00000005  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_ZBC_SHIFT 0  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR2_ZBC 1:0 */
#define NVOS32_ATTR2_ZBC_WIDTH 2
#define NVOS32_ATTR2_ZBC_DEFAULT 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_ZBC_PREFER_NO_ZBC 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_ZBC_PREFER_ZBC 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_ZBC_REQUIRE_ONLY_ZBC 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_ZBC_INVALID 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_GPU_CACHEABLE_SHIFT 2  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR2_GPU_CACHEABLE 3:2 */
#define NVOS32_ATTR2_GPU_CACHEABLE_WIDTH 2
#define NVOS32_ATTR2_GPU_CACHEABLE_DEFAULT 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_GPU_CACHEABLE_YES 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_GPU_CACHEABLE_NO 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_GPU_CACHEABLE_INVALID 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_ZBC_SKIP_ZBCREFCOUNT_SHIFT 17  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR2_ZBC_SKIP_ZBCREFCOUNT 17:17 */
#define NVOS32_ATTR2_ZBC_SKIP_ZBCREFCOUNT_WIDTH 1
#define NVOS32_ATTR2_ZBC_SKIP_ZBCREFCOUNT_NO 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_ZBC_SKIP_ZBCREFCOUNT_YES 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_PAGE_SIZE_HUGE_SHIFT 20  /* src/common/sdk/nvidia/inc/nvos.h: NVOS32_ATTR2_PAGE_SIZE_HUGE 21:20 */
#define NVOS32_ATTR2_PAGE_SIZE_HUGE_WIDTH 2
#define NVOS32_ATTR2_PAGE_SIZE_HUGE_DEFAULT 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_PAGE_SIZE_HUGE_2MB 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_PAGE_SIZE_HUGE_512MB 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ATTR2_PAGE_SIZE_HUGE_256GB 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_IGNORE_BANK_PLACEMENT 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_FIXED_ADDRESS_ALLOCATE 0x00000010  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_ALIGNMENT_HINT 0x00000080  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_ALIGNMENT_FORCE 0x00000100  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_NO_SCANOUT 0x00001000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_MEMORY_HANDLE_PROVIDED 0x00004000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_MAP_NOT_REQUIRED 0x00008000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_PERSISTENT_VIDMEM 0x00010000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_VIRTUAL 0x00080000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS32_ALLOC_FLAGS_SKIP_RESOURCE_ALLOC 0x10000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_ACCESS_SHIFT 0  /* src/common/sdk/nvidia/inc/nvos.h: NVOS33_FLAGS_ACCESS 1:0 */
#define NVOS33_FLAGS_ACCESS_WIDTH 2
#define NVOS33_FLAGS_ACCESS_READ_WRITE 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_ACCESS_READ_ONLY 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_ACCESS_WRITE_ONLY 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_MAPPING_SHIFT 15  /* src/common/sdk/nvidia/inc/nvos.h: NVOS33_FLAGS_MAPPING 16:15 */
#define NVOS33_FLAGS_MAPPING_WIDTH 2
#define NVOS33_FLAGS_MAPPING_DEFAULT 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_MAPPING_DIRECT 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_MAPPING_REFLECTED 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_CACHING_TYPE_SHIFT 23  /* src/common/sdk/nvidia/inc/nvos.h: NVOS33_FLAGS_CACHING_TYPE 25:23 */
#define NVOS33_FLAGS_CACHING_TYPE_WIDTH 3
#define NVOS33_FLAGS_CACHING_TYPE_CACHED 0  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_CACHING_TYPE_UNCACHED 1  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_CACHING_TYPE_WRITECOMBINED 2  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_CACHING_TYPE_WRITEBACK 5  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_CACHING_TYPE_DEFAULT 6  /* src/common/sdk/nvidia/inc/nvos.h */
#define NVOS33_FLAGS_CACHING_TYPE_UNCACHED_WEAK 7  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_VASPACE_ALLOCATION_FLAGS_NONE 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_VASPACE_ALLOCATION_FLAGS_MINIMIZE_PTETABLE_SIZE 0x1  /* src/common/sdk/nvidia/inc/nvos.h: BIT(0) */
#define NV_VASPACE_ALLOCATION_FLAGS_RETRY_PTE_ALLOC_IN_SYS 0x2  /* src/common/sdk/nvidia/inc/nvos.h: BIT(1) */
#define NV_VASPACE_ALLOCATION_FLAGS_SHARED_MANAGEMENT 0x4  /* src/common/sdk/nvidia/inc/nvos.h: BIT(2) */
#define NV_VASPACE_ALLOCATION_FLAGS_IS_EXTERNALLY_OWNED 0x8  /* src/common/sdk/nvidia/inc/nvos.h: BIT(3) */
#define NV_VASPACE_ALLOCATION_FLAGS_ENABLE_NVLINK_ATS 0x10  /* src/common/sdk/nvidia/inc/nvos.h: BIT(4) */
#define NV_VASPACE_ALLOCATION_FLAGS_IS_MIRRORED 0x20  /* src/common/sdk/nvidia/inc/nvos.h: BIT(5) */
#define NV_VASPACE_ALLOCATION_FLAGS_ENABLE_PAGE_FAULTING 0x40  /* src/common/sdk/nvidia/inc/nvos.h: BIT(6) */
#define NV_VASPACE_ALLOCATION_FLAGS_VA_INTERNAL_LIMIT 0x80  /* src/common/sdk/nvidia/inc/nvos.h: BIT(7) */
#define NV_VASPACE_ALLOCATION_FLAGS_ALLOW_ZERO_ADDRESS 0x100  /* src/common/sdk/nvidia/inc/nvos.h: BIT(8) */
#define NV_VASPACE_ALLOCATION_FLAGS_IS_FLA 0x200  /* src/common/sdk/nvidia/inc/nvos.h: BIT(9) */
#define NV_VASPACE_ALLOCATION_FLAGS_SKIP_SCRUB_MEMPOOL 0x400  /* src/common/sdk/nvidia/inc/nvos.h: BIT(10) */
#define NV_VASPACE_ALLOCATION_FLAGS_OPTIMIZE_PTETABLE_MEMPOOL_USAGE 0x800  /* src/common/sdk/nvidia/inc/nvos.h: BIT(11) */
#define NV_VASPACE_ALLOCATION_FLAGS_REQUIRE_FIXED_OFFSET 0x1000  /* src/common/sdk/nvidia/inc/nvos.h: BIT(12) */
#define NV_VASPACE_ALLOCATION_FLAGS_PTETABLE_HEAP_MANAGED 0x2000  /* src/common/sdk/nvidia/inc/nvos.h: BIT(13) */
#define NV_VASPACE_ALLOCATION_FLAGS_ENABLE_NVLINK_ATS_TEST 0x4000  /* src/common/sdk/nvidia/inc/nvos.h: BIT(14) */
#define NV_VASPACE_ALLOCATION_INDEX_GPU_NEW 0x00  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_SHIFT 0  /* src/common/sdk/nvidia/inc/nvos.h: NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT 1:0 */
#define NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_WIDTH 2
#define NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_SYNC 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_ASYNC 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_SPECIFIED 0x00000002  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_ASYNC_PREFER_LOWER 0x00000003  /* src/common/sdk/nvidia/inc/nvos.h */

/* ---- allocation parameters of the classes (hClass of NVOS64; class ids are in classes.h) ---- */
#define NV01_NULL_OBJECT 0x0                     /* src/common/sdk/nvidia/inc/class/cl0000.h */

/* src/common/sdk/nvidia/inc/class/cl0080.h: NV01_DEVICE_0 */
typedef struct NV0080_ALLOC_PARAMETERS {
    NvU32 deviceId;
    NvHandle hClientShare;
    NvHandle hTargetClient;
    NvHandle hTargetDevice;
    NvV32 flags;
    NvU64 vaSpaceSize __attribute__((aligned(8)));
    NvU64 vaStartInternal __attribute__((aligned(8)));
    NvU64 vaLimitInternal __attribute__((aligned(8)));
    NvV32 vaMode;
} NV0080_ALLOC_PARAMETERS;

/* src/common/sdk/nvidia/inc/class/cl2080.h: NV20_SUBDEVICE_0 */
typedef struct NV2080_ALLOC_PARAMETERS {
    NvU32 subDeviceId;
} NV2080_ALLOC_PARAMETERS;

/* src/common/sdk/nvidia/inc/class/cl0005.h: NV01_EVENT / NV01_EVENT_OS_EVENT */
typedef struct NV0005_ALLOC_PARAMETERS {
    NvHandle hParentClient;
    NvHandle hSrcResource;
    NvV32 hClass;
    NvV32 notifyIndex;
    NvP64 data __attribute__((aligned(8)));
} NV0005_ALLOC_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: FERMI_VASPACE_A */
typedef struct NV_VASPACE_ALLOCATION_PARAMETERS {
    NvU32 index;
    NvV32 flags;
    NvU64 vaSize __attribute__((aligned(8)));
    NvU64 vaStartInternal __attribute__((aligned(8)));
    NvU64 vaLimitInternal __attribute__((aligned(8)));
    NvU32 bigPageSize;
    NvU64 vaBase __attribute__((aligned(8)));
    NvU32 pasid;
} NV_VASPACE_ALLOCATION_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: NV01_MEMORY_LOCAL_USER, NV01_MEMORY_SYSTEM, NV01_MEMORY_VIRTUAL (NVOS32 type/attr/flags above) */
typedef struct NV_MEMORY_ALLOCATION_PARAMS {
    NvU32 owner;
    NvU32 type;
    NvU32 flags;
    NvU32 width;
    NvU32 height;
    NvS32 pitch;
    NvU32 attr;
    NvU32 attr2;
    NvU32 format;
    NvU32 comprCovg;
    NvU32 zcullCovg;
    NvU64 rangeLo __attribute__((aligned(8)));
    NvU64 rangeHi __attribute__((aligned(8)));
    NvU64 size __attribute__((aligned(8)));
    NvU64 alignment __attribute__((aligned(8)));
    NvU64 offset __attribute__((aligned(8)));
    NvU64 limit __attribute__((aligned(8)));
    NvP64 address __attribute__((aligned(8)));
    NvU32 ctagOffset;
    NvHandle hVASpace;
    NvU32 internalflags;
    NvU32 tag;
    NvS32 numaNode;
} NV_MEMORY_ALLOCATION_PARAMS;

/* src/common/sdk/nvidia/inc/nvos.h: KEPLER_CHANNEL_GROUP_A */
typedef struct NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS {
    NvHandle hObjectError;
    NvHandle hObjectEccError;
    NvHandle hVASpace;
    NvU32 engineType;
    NvBool bIsCallingContextVgpuPlugin;
} NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS;

/* src/common/sdk/nvidia/inc/nvos.h: FERMI_CONTEXT_SHARE_A */
typedef struct NV_CTXSHARE_ALLOCATION_PARAMETERS {
    NvHandle hVASpace;
    NvU32 flags;
    NvU32 subctxId;
} NV_CTXSHARE_ALLOCATION_PARAMETERS;

/* src/common/sdk/nvidia/inc/alloc/alloc_channel.h */
typedef struct NV_MEMORY_DESC_PARAMS {
    NvU64 base __attribute__((aligned(8)));
    NvU64 size __attribute__((aligned(8)));
    NvU32 addressSpace;
    NvU32 cacheAttrib;
} NV_MEMORY_DESC_PARAMS;

#define CC_CHAN_ALLOC_IV_SIZE_DWORD 3            /* src/common/sdk/nvidia/inc/alloc/alloc_channel.h */
#define CC_CHAN_ALLOC_NONCE_SIZE_DWORD 8         /* src/common/sdk/nvidia/inc/alloc/alloc_channel.h */

/* src/common/sdk/nvidia/inc/alloc/alloc_channel.h: the *_CHANNEL_GPFIFO_* classes (upstream NV_CHANNEL_ALLOC_PARAMS, typedef'd to
 * NV_CHANNELGPFIFO_ALLOCATION_PARAMETERS) */
typedef struct NV_CHANNEL_ALLOC_PARAMS {
    NvHandle hObjectError;
    NvHandle hObjectBuffer;
    NvU64 gpFifoOffset __attribute__((aligned(8)));
    NvU32 gpFifoEntries;
    NvU32 flags;
    NvHandle hContextShare;
    NvHandle hVASpace;
    NvHandle hUserdMemory[NV_MAX_SUBDEVICES];
    NvU64 userdOffset[NV_MAX_SUBDEVICES] __attribute__((aligned(8)));
    NvU32 engineType;
    NvU32 cid;
    NvU32 subDeviceId;
    NvHandle hObjectEccError;
    NV_MEMORY_DESC_PARAMS instanceMem __attribute__((aligned(8)));
    NV_MEMORY_DESC_PARAMS userdMem __attribute__((aligned(8)));
    NV_MEMORY_DESC_PARAMS ramfcMem __attribute__((aligned(8)));
    NV_MEMORY_DESC_PARAMS mthdbufMem __attribute__((aligned(8)));
    NvHandle hPhysChannelGroup;
    NvU32 internalFlags;
    NV_MEMORY_DESC_PARAMS errorNotifierMem __attribute__((aligned(8)));
    NV_MEMORY_DESC_PARAMS eccErrorNotifierMem __attribute__((aligned(8)));
    NvU32 ProcessID;
    NvU32 SubProcessID;
    NvU32 encryptIv[CC_CHAN_ALLOC_IV_SIZE_DWORD];
    NvU32 decryptIv[CC_CHAN_ALLOC_IV_SIZE_DWORD];
    NvU32 hmacNonce[CC_CHAN_ALLOC_NONCE_SIZE_DWORD];
    NvU32 tpcConfigID;
} NV_CHANNEL_ALLOC_PARAMS;
typedef NV_CHANNEL_ALLOC_PARAMS NV_CHANNELGPFIFO_ALLOCATION_PARAMETERS;

/* ---- RM controls (NVOS54 cmd) and their parameters ---- */
#define NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2 0x205  /* src/common/sdk/nvidia/inc/ctrl/ctrl0000/ctrl0000gpu.h */
typedef struct NV0000_CTRL_GPU_GET_ID_INFO_V2_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl0000/ctrl0000gpu.h */
    NvU32 gpuId;
    NvU32 gpuFlags;
    NvU32 deviceInstance;
    NvU32 subDeviceInstance;
    NvU32 sliStatus;
    NvU32 boardId;
    NvU32 gpuInstance;
    NvS32 numaId;
} NV0000_CTRL_GPU_GET_ID_INFO_V2_PARAMS;

#define NV0000_CTRL_CMD_GPU_GET_PROBED_IDS 0x214  /* src/common/sdk/nvidia/inc/ctrl/ctrl0000/ctrl0000gpu.h */
#define NV0000_CTRL_GPU_MAX_PROBED_GPUS NV_MAX_DEVICES  /* src/common/sdk/nvidia/inc/ctrl/ctrl0000/ctrl0000gpu.h */
#define NV0000_CTRL_GPU_INVALID_ID 0xffffffff    /* src/common/sdk/nvidia/inc/ctrl/ctrl0000/ctrl0000gpu.h */
typedef struct NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl0000/ctrl0000gpu.h */
    NvU32 gpuIds[NV0000_CTRL_GPU_MAX_PROBED_GPUS];
    NvU32 excludedGpuIds[NV0000_CTRL_GPU_MAX_PROBED_GPUS];
    NvU32 gpuFlags[NV0000_CTRL_GPU_MAX_PROBED_GPUS];
} NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS;

#define NV0080_CTRL_CMD_GPU_GET_CLASSLIST_V2 0x800292  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gpu.h */
#define NV0080_CTRL_GPU_CLASSLIST_MAX_SIZE 200    /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gpu.h */
typedef struct NV0080_CTRL_GPU_GET_CLASSLIST_V2_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gpu.h */
    NvU32 numClasses;
    NvU32 classList[NV0080_CTRL_GPU_CLASSLIST_MAX_SIZE];
} NV0080_CTRL_GPU_GET_CLASSLIST_V2_PARAMS;

#define NV2080_CTRL_CMD_MC_GET_ARCH_INFO 0x20801701  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
typedef struct NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
    NvU32 architecture;
    NvU32 implementation;
    NvU32 revision;
    NvU8 subRevision;
} NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS;
#define NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100 0x00000170  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GH100 0x00000180  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GB100 0x000001A0  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GB200 0x000001B0  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA100 0x00000000  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA102 0x00000002  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA103 0x00000003  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA104 0x00000004  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA106 0x00000006  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA107 0x00000007  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA10B 0x0000000B  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GH100 0x00000000  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB100 0x00000000  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB102 0x00000002  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB200 0x00000000  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB202 0x00000002  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB203 0x00000003  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB205 0x00000005  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB206 0x00000006  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB207 0x00000007  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */

#define NV2080_CTRL_CMD_GPU_GET_GID_INFO 0x2080014a  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
#define NV2080_GPU_MAX_GID_LENGTH 0x100           /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
#define NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_SHIFT 0  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h: FORMAT 1:0 */
#define NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_WIDTH 2
#define NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_ASCII 0x0   /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
#define NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_BINARY 0x2  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
typedef struct NV2080_CTRL_GPU_GET_GID_INFO_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
    NvU32 index;
    NvU32 flags;
    NvU32 length;
    NvU8 data[NV2080_GPU_MAX_GID_LENGTH];
} NV2080_CTRL_GPU_GET_GID_INFO_PARAMS;

#define NV2080_CTRL_CMD_GR_GET_INFO 0x20801201    /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_SHADER_PIPE_SUB_COUNT 0x00000009  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_SM_VERSION 0x0000000C  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_MAX_WARPS_PER_SM 0x0000000D  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_MAX_THREADS_PER_WARP 0x0000000E  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_GPCS 0x00000014  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_TPC_PER_GPC 0x00000017  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_SM_PER_TPC 0x00000020  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
#define NV0080_CTRL_GR_INFO_INDEX_MAX 0x00000039  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
typedef struct NV0080_CTRL_GR_INFO {      /* src/common/sdk/nvidia/inc/ctrl/ctrlxxxx.h (NVXXXX_CTRL_XXX_INFO) via ctrl0080gr.h */
    NvU32 index;
    NvU32 data;
} NV0080_CTRL_GR_INFO;
typedef NV0080_CTRL_GR_INFO NV2080_CTRL_GR_INFO;  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gr.h */
typedef struct NV0080_CTRL_GR_ROUTE_INFO {  /* src/common/sdk/nvidia/inc/ctrl/ctrl0080/ctrl0080gr.h */
    NvU32 flags;
    NvU64 route __attribute__((aligned(8)));
} NV0080_CTRL_GR_ROUTE_INFO;
typedef NV0080_CTRL_GR_ROUTE_INFO NV2080_CTRL_GR_ROUTE_INFO;  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gr.h */
typedef struct NV2080_CTRL_GR_GET_INFO_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gr.h: grInfoList points at NV2080_CTRL_GR_INFO[] */
    NvU32 grInfoListSize;
    NvP64 grInfoList __attribute__((aligned(8)));
    NV2080_CTRL_GR_ROUTE_INFO grRouteInfo __attribute__((aligned(8)));
} NV2080_CTRL_GR_GET_INFO_PARAMS;

#define NV2080_CTRL_CMD_TIMER_GET_TIME 0x20800403  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080tmr.h */
typedef struct NV2080_CTRL_TIMER_GET_TIME_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080tmr.h */
    NvU64 time_nsec __attribute__((aligned(8)));
} NV2080_CTRL_TIMER_GET_TIME_PARAMS;

#define NV2080_CTRL_CMD_PERF_BOOST 0x2080200a     /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080perf.h */
#define NV2080_CTRL_PERF_BOOST_FLAGS_CMD_SHIFT 0  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080perf.h: CMD 1:0 */
#define NV2080_CTRL_PERF_BOOST_FLAGS_CMD_WIDTH 2
#define NV2080_CTRL_PERF_BOOST_FLAGS_CMD_BOOST_TO_MAX 0x2  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080perf.h */
#define NV2080_CTRL_PERF_BOOST_DURATION_INFINITE 0xffffffff  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080perf.h */
typedef struct NV2080_CTRL_PERF_BOOST_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080perf.h */
    NvU32 flags;
    NvU32 duration;
} NV2080_CTRL_PERF_BOOST_PARAMS;

#define NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN 0xc36f0108  /* src/common/sdk/nvidia/inc/ctrl/ctrlc36f.h */
typedef struct NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrlc36f.h */
    NvU32 workSubmitToken;
} NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS;

#define NVA06C_CTRL_CMD_GPFIFO_SCHEDULE 0xa06c0101  /* src/common/sdk/nvidia/inc/ctrl/ctrla06c.h */
typedef struct NVA06F_CTRL_GPFIFO_SCHEDULE_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrla06f/ctrla06fgpfifo.h */
    NvBool bEnable;
    NvBool bSkipSubmit;
    NvBool bSkipEnable;
} NVA06F_CTRL_GPFIFO_SCHEDULE_PARAMS;
typedef NVA06F_CTRL_GPFIFO_SCHEDULE_PARAMS NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS;  /* src/common/sdk/nvidia/inc/ctrl/ctrla06c.h */

#define NVA06C_CTRL_CMD_SET_TIMESLICE 0xa06c0103  /* src/common/sdk/nvidia/inc/ctrl/ctrla06c.h */
typedef struct NVA06C_CTRL_TIMESLICE_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrla06c.h */
    NvU64 timesliceUs __attribute__((aligned(8)));
} NVA06C_CTRL_TIMESLICE_PARAMS;

/* ---- channel error reports: the error notifier RM writes, its codes, and the GR debugger's MMU fault record ---- */
/* src/common/sdk/nvidia/inc/nvgputypes.h: NvNotification (16 bytes; RM fills it when a channel errors) */
typedef struct NvNotification {
    NvU32 timeStampNanoseconds[2];  /* upstream: struct { NvU32 nanoseconds[2]; } timeStamp */
    NvV32 info32;
    NvU16 info16;
    NvU16 status;
} NvNotification;
#define NV_CHANNELGPFIFO_NOTIFICATION_TYPE_ERROR 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_CHANNELGPFIFO_NOTIFICATION_TYPE_WORK_SUBMIT_TOKEN 0x00000001  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_CHANNELGPFIFO_NOTIFICATION_TYPE__SIZE_1 3  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_CHANNELGPFIFO_NOTIFICATION_STATUS_VALUE_SHIFT 0  /* src/common/sdk/nvidia/inc/nvos.h: STATUS_VALUE 14:0 */
#define NV_CHANNELGPFIFO_NOTIFICATION_STATUS_VALUE_WIDTH 15
#define NV_CHANNELGPFIFO_NOTIFICATION_STATUS_IN_PROGRESS_SHIFT 15  /* src/common/sdk/nvidia/inc/nvos.h: IN_PROGRESS 15:15 */
#define NV_CHANNELGPFIFO_NOTIFICATION_STATUS_IN_PROGRESS_WIDTH 1
#define ROBUST_CHANNEL_GR_EXCEPTION 13            /* src/common/sdk/nvidia/inc/nverror.h */
#define ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT 31  /* src/common/sdk/nvidia/inc/nverror.h */
#define ROBUST_CHANNEL_PBDMA_ERROR 32             /* src/common/sdk/nvidia/inc/nverror.h */
#define ROBUST_CHANNEL_CE0_ERROR 39               /* src/common/sdk/nvidia/inc/nverror.h */
#define ROBUST_CHANNEL_CE1_ERROR 40               /* src/common/sdk/nvidia/inc/nverror.h */
#define ROBUST_CHANNEL_CE2_ERROR 41               /* src/common/sdk/nvidia/inc/nverror.h */

#define GT200_DEBUGGER 0x83de                     /* src/common/sdk/nvidia/inc/class/cl83de.h */
/* src/common/sdk/nvidia/inc/class/cl83de.h: a child of the compute object it watches (hClass3dObject) */
typedef struct NV83DE_ALLOC_PARAMETERS {
    NvHandle hDebuggerClient_Obsolete;  /* must be zero */
    NvHandle hAppClient;
    NvHandle hClass3dObject;
} NV83DE_ALLOC_PARAMETERS;
#define NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO 0x83de0328  /* src/common/sdk/nvidia/inc/ctrl/ctrl83de/ctrl83dedebug.h */
#define NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_MAX_ENTRIES 4  /* src/common/sdk/nvidia/inc/ctrl/ctrl83de/ctrl83dedebug.h */
typedef struct NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_ENTRY {  /* src/common/sdk/nvidia/inc/ctrl/ctrl83de/ctrl83dedebug.h */
    NvU64 faultAddress __attribute__((aligned(8)));
    NvU32 faultType;
    NvU32 accessType;
} NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_ENTRY;
typedef struct NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl83de/ctrl83dedebug.h */
    NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_ENTRY mmuFaultInfoList[NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_MAX_ENTRIES] __attribute__((aligned(8)));
    NvU32 count;
} NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_PARAMS;

/* ---- framebuffer facts for the probe: RAM and BAR1 sizes ---- */
#define NV2080_CTRL_CMD_FB_GET_INFO_V2 0x20801303  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080fb.h */
#define NV2080_CTRL_FB_INFO_INDEX_BAR1_SIZE 0x5   /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080fb.h */
#define NV2080_CTRL_FB_INFO_INDEX_RAM_SIZE 0x7    /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080fb.h: in KiB */
#define NV2080_CTRL_FB_INFO_MAX_LIST_SIZE 0x80    /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080fb.h */
typedef struct NV2080_CTRL_FB_INFO {  /* src/common/sdk/nvidia/inc/ctrl/ctrlxxxx.h: NVXXXX_CTRL_XXX_INFO */
    NvU32 index;
    NvU32 data;
} NV2080_CTRL_FB_INFO;
typedef struct NV2080_CTRL_FB_GET_INFO_V2_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080fb.h */
    NvU32 fbInfoListSize;
    NV2080_CTRL_FB_INFO fbInfoList[NV2080_CTRL_FB_INFO_MAX_LIST_SIZE];
} NV2080_CTRL_FB_GET_INFO_V2_PARAMS;
#define NV2080_CTRL_CMD_GPU_GET_NAME_STRING 0x20800110  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
#define NV2080_GPU_MAX_NAME_STRING_LENGTH 0x40    /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
#define NV2080_CTRL_GPU_GET_NAME_STRING_FLAGS_TYPE_ASCII 0x0  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
typedef struct NV2080_CTRL_GPU_GET_NAME_STRING_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080gpu.h */
    NvU32 gpuNameStringFlags;
    union {
        NvU8 ascii[NV2080_GPU_MAX_NAME_STRING_LENGTH];
        NvU16 unicode[NV2080_GPU_MAX_NAME_STRING_LENGTH];
    } gpuNameString;
} NV2080_CTRL_GPU_GET_NAME_STRING_PARAMS;

/* ---- sleeping on the GPU: an OS event the non-stall interrupt method triggers ---- */
/* Usage (src/nvidia/src/kernel/gpu/mem_mgr/mem_utils.c does the same for RM's own channel with a kernel callback):
 * NV_ESC_ALLOC_OS_EVENT registers an fd; an NV01_EVENT_OS_EVENT under the subdevice with notifyIndex
 * NV2080_NOTIFIERS_FIFO_EVENT_MTHD | NV01_EVENT_NONSTALL_INTR and data = that fd; NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION
 * with ACTION_REPEAT arms it. A channel's NON_STALL_INTERRUPT method then queues an event on the fd's file: poll()
 * reports it (kernel-open/nvidia/nv.c nvidia_poll) and NV_ESC_RM_GET_EVENT_DATA dequeues it (osapi.c get_os_event_data). */
#define NV_ESC_RM_GET_EVENT_DATA 0x52              /* src/nvidia/arch/nvalloc/unix/include/nv_escape.h */
#define NV2080_NOTIFIERS_FIFO_EVENT_MTHD 35        /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV2080_NOTIFIERS_GRAPHICS 12               /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV2080_NOTIFIERS_CE0 23                    /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV2080_NOTIFIERS_MAXCOUNT 198              /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV01_EVENT_NONSTALL_INTR 0x08000000        /* src/common/sdk/nvidia/inc/nvos.h */
#define NV01_EVENT_WITHOUT_EVENT_DATA 0x10000000   /* src/common/sdk/nvidia/inc/nvos.h */
/* src/common/sdk/nvidia/inc/nvos.h: one dequeued event */
typedef struct NvUnixEvent {
    NvHandle hObject;
    NvV32 NotifyIndex;
    NvV32 info32;
    NvU16 info16;
} NvUnixEvent;
/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_GET_EVENT_DATA */
typedef struct NVOS41_PARAMETERS {
    NvP64 pEvent __attribute__((aligned(8)));
    NvV32 MoreEvents;
    NvV32 status;
} NVOS41_PARAMETERS;
#define NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION 0x20800301  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080event.h */
#define NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_DISABLE 0x0  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080event.h */
#define NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_SINGLE 0x1  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080event.h */
#define NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_REPEAT 0x2  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080event.h */
typedef struct NV2080_CTRL_EVENT_SET_NOTIFICATION_PARAMS {  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080event.h */
    NvU32 event;
    NvU32 action;
    NvBool bNotifyState;
    NvU32 info32;
    NvU16 info16;
} NV2080_CTRL_EVENT_SET_NOTIFICATION_PARAMS;

/* ---- added for the emulated RM (emu/nv/rm.py): unmapping, OS event teardown, engine types, Ada, more statuses ---- */
/* src/common/sdk/nvidia/inc/nvos.h: NV_ESC_RM_UNMAP_MEMORY */
typedef struct NVOS34_PARAMETERS {
    NvHandle hClient;
    NvHandle hDevice;
    NvHandle hMemory;
    NvP64 pLinearAddress __attribute__((aligned(8)));
    NvU32 status;
    NvU32 flags;
} NVOS34_PARAMETERS;
/* kernel-open/common/inc/nv-ioctl.h: NV_ESC_FREE_OS_EVENT */
typedef struct nv_ioctl_free_os_event {
    NvHandle hClient;
    NvHandle hDevice;
    NvU32 fd;
    NvU32 Status;
} nv_ioctl_free_os_event_t;
#define NV_IOC_RM_UNMAP_MEMORY _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_UNMAP_MEMORY, NVOS34_PARAMETERS)
#define NV_IOC_FREE_OS_EVENT _IOWR(NV_IOCTL_MAGIC, NV_ESC_FREE_OS_EVENT, nv_ioctl_free_os_event_t)
#define NV_IOC_RM_GET_EVENT_DATA _IOWR(NV_IOCTL_MAGIC, NV_ESC_RM_GET_EVENT_DATA, NVOS41_PARAMETERS)
#define NV2080_ENGINE_TYPE_NULL 0x00000000      /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV2080_ENGINE_TYPE_GRAPHICS 0x00000001  /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV2080_ENGINE_TYPE_COPY0 0x00000009     /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV2080_ENGINE_TYPE_COPY9 0x00000012     /* src/common/sdk/nvidia/inc/class/cl2080_notification.h */
#define NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_AD100 0x00000190  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_AD102 0x00000002  /* src/common/sdk/nvidia/inc/ctrl/ctrl2080/ctrl2080mc.h */
#define HOPPER_USERMODE_A 0xc661                 /* src/common/sdk/nvidia/inc/class/clc661.h */
#define NV_ERR_BUSY_RETRY 0x00000003             /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_GPU_UUID_NOT_FOUND 0x00000012     /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_EVENT 0x00000028          /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_OFFSET 0x00000037         /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_POINTER 0x0000003D        /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_INVALID_REQUEST 0x0000003F        /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_PAGE_TABLE_NOT_AVAIL 0x0000005D   /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_OUT_OF_RANGE 0x0000005B           /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_STATE_IN_USE 0x00000063           /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_ERR_UVM_ADDRESS_IN_USE 0x00000068     /* src/common/sdk/nvidia/inc/nvstatuscodes.h */
#define NV_WARN_NOTHING_TO_DO 0x00010006         /* src/common/sdk/nvidia/inc/nvstatuscodes.h */

/* ---- added for the driver (drivers/nv/device.py): the device's VA mode ---- */
#define NV_DEVICE_ALLOCATION_VAMODE_OPTIONAL_MULTIPLE_VASPACES 0x00000000  /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_DEVICE_ALLOCATION_VAMODE_SINGLE_VASPACE 0x00000001              /* src/common/sdk/nvidia/inc/nvos.h */
#define NV_DEVICE_ALLOCATION_VAMODE_MULTIPLE_VASPACES 0x00000002           /* src/common/sdk/nvidia/inc/nvos.h */

#define ROBUST_CHANNEL_PREEMPTIVE_REMOVAL 45      /* src/common/sdk/nvidia/inc/nverror.h */

#endif
