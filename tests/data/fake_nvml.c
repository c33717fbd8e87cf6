/* A stand-in for NVIDIA's libnvidia-ml.so.1, for the tests of the GPU figures on machines
 * without an NVIDIA driver: what a real driver cannot be made to do on demand (no device,
 * a permission refused, a device lost mid-run) and exact, known readings. The real
 * nvidia-ml-py bindings load it (LD_LIBRARY_PATH) and call it as they call the driver.
 *
 * Behaviour, read from the environment at every call:
 *   FAKE_NVML_INIT    the code nvmlInitWithFlags returns (0: success; 9: driver not loaded)
 *   FAKE_NVML_DEVICES how many devices (default 1)
 *   FAKE_NVML_LOST    a device index: every reading of it answers 15 (GPU is lost)
 *   FAKE_NVML_DENY    a reading ("power", "energy", "utilization", ...) that answers 4
 *                     (no permission) on every device
 * Device i reads: utilization 40+i %, memory (2+i) GiB used of (16+i) GiB, power
 * 150000+i mW, energy 5000000 + 1000 * (the readings of it so far) mJ, temperature 55+i C,
 * SM clock 1500+i MHz, name "Fake GPU i", UUID "GPU-fake-i".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned int gpu, memory; } utilization_t;
typedef struct { unsigned long long total, free, used; } memory_t;

static unsigned long long energy_reads[64];

static int env_int(const char *name, int otherwise) {
    const char *value = getenv(name);
    return value && *value ? atoi(value) : otherwise;
}

static int device(void *handle) { return (int)(long)handle - 1; }

static int check(void *handle, const char *reading) {
    const char *lost = getenv("FAKE_NVML_LOST");
    const char *deny = getenv("FAKE_NVML_DENY");
    int index = device(handle);
    if (index < 0 || index >= env_int("FAKE_NVML_DEVICES", 1)) return 2; /* invalid argument */
    if (lost && *lost && atoi(lost) == index) return 15;
    if (deny && strcmp(deny, reading) == 0) return 4;
    return 0;
}

int nvmlInitWithFlags(unsigned int flags) { (void)flags; return env_int("FAKE_NVML_INIT", 0); }
int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) { return 0; }

const char *nvmlErrorString(int result) {
    switch (result) {
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 9: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}

int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    snprintf(version, length, "999.99");
    return 0;
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    *count = (unsigned int)env_int("FAKE_NVML_DEVICES", 1);
    return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **handle) {
    if ((int)index >= env_int("FAKE_NVML_DEVICES", 1)) return 2;
    *handle = (void *)(long)(index + 1);
    return 0;
}

int nvmlDeviceGetName(void *handle, char *name, unsigned int length) {
    int code = check(handle, "name");
    if (!code) snprintf(name, length, "Fake GPU %d", device(handle));
    return code;
}

int nvmlDeviceGetUUID(void *handle, char *uuid, unsigned int length) {
    int code = check(handle, "uuid");
    if (!code) snprintf(uuid, length, "GPU-fake-%d", device(handle));
    return code;
}

int nvmlDeviceGetUtilizationRates(void *handle, utilization_t *rates) {
    int code = check(handle, "utilization");
    if (!code) { rates->gpu = 40 + device(handle); rates->memory = 10; }
    return code;
}

int nvmlDeviceGetMemoryInfo(void *handle, memory_t *memory) {
    int code = check(handle, "memory");
    if (!code) {
        memory->total = (16ULL + device(handle)) << 30;
        memory->used = (2ULL + device(handle)) << 30;
        memory->free = memory->total - memory->used;
    }
    return code;
}

int nvmlDeviceGetPowerUsage(void *handle, unsigned int *milliwatts) {
    int code = check(handle, "power");
    if (!code) *milliwatts = 150000 + device(handle);
    return code;
}

int nvmlDeviceGetTotalEnergyConsumption(void *handle, unsigned long long *millijoules) {
    int code = check(handle, "energy");
    if (!code) *millijoules = 5000000ULL + 1000ULL * energy_reads[device(handle) & 63]++;
    return code;
}

int nvmlDeviceGetTemperature(void *handle, int sensor, unsigned int *celsius) {
    int code = check(handle, "temperature");
    (void)sensor;
    if (!code) *celsius = 55 + device(handle);
    return code;
}

int nvmlDeviceGetClockInfo(void *handle, int type, unsigned int *mhz) {
    int code = check(handle, "clock");
    (void)type;
    if (!code) *mhz = 1500 + device(handle);
    return code;
}
