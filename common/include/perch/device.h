/*
 * device.h — the `device:` section of /etc/perch/config.yaml, shared by
 * perch-agent and perch-hub: who the device is (id, IoT Hub host name, the
 * name modules reach the hub by), where its key and certificates live, and
 * the file through which the agent tells the hub what is deployed (module
 * identities, $edgeHub routes, desired twins). docs/identity.md explains
 * the whole scheme.
 *
 * Each program embeds a perch_device_settings in its own settings struct
 * and adds PERCH_DEVICE_CFG_ROWS(its struct, the member) to its table, so
 * one loader checks the section for both.
 */
#ifndef PERCH_DEVICE_H
#define PERCH_DEVICE_H

#include <stddef.h>

#include "perch/config.h"
#include "perch/err.h"

#define PERCH_DEVICE_ID_MAX  128 /* IoT Hub's limit on device and module ids */
#define PERCH_DEVICE_KEY_MAX 128 /* base64 text of a symmetric key */

typedef struct perch_device_settings {
	char *id;               /* device.id; NULL: the host name */
	char *iothub_hostname;  /* device.iothub_hostname: in user names and tokens */
	char *gateway_hostname; /* device.gateway_hostname: how modules reach the hub */
	char *key_file;         /* device.key_file: the device's base64 symmetric key */
	char *certs_dir;        /* device.certs_dir: device CA and the hub's server cert */
	char *deployment_file;  /* device.hub_deployment: what the agent tells the hub */
} perch_device_settings;

/* The rows of the device section, for a settings struct T with member M. */
#define PERCH_DEVICE_CFG_ROWS(T, M)                                                                \
	{"device.id", PERCH_CFG_STRING,                                                            \
	 0,           PERCH_DEVICE_ID_MAX,                                                         \
	 NULL,        offsetof(T, M.id),                                                           \
	 NULL,        "device id (IOTEDGE_DEVICEID); absent: the host name"},                      \
	        {"device.iothub_hostname",                                                         \
	         PERCH_CFG_STRING,                                                                 \
	         1,                                                                                \
	         255,                                                                              \
	         "perch.local",                                                                    \
	         offsetof(T, M.iothub_hostname),                                                   \
	         NULL,                                                                             \
	         "IoT Hub host name in user names and SAS tokens (IOTEDGE_IOTHUBHOSTNAME)"},       \
	        {"device.gateway_hostname",                                                        \
	         PERCH_CFG_STRING,                                                                 \
	         1,                                                                                \
	         255,                                                                              \
	         "perch-hub",                                                                      \
	         offsetof(T, M.gateway_hostname),                                                  \
	         NULL,                                                                             \
	         "name modules and leaf devices reach the hub by (in its TLS certificate)"},       \
	        {"device.key_file",                                                                \
	         PERCH_CFG_STRING,                                                                 \
	         1,                                                                                \
	         1024,                                                                             \
	         "/var/lib/perch/device.key",                                                      \
	         offsetof(T, M.key_file),                                                          \
	         NULL,                                                                             \
	         "the device's base64 symmetric key (made by perch-agent on first start)"},        \
	        {"device.certs_dir",                                                               \
	         PERCH_CFG_STRING,                                                                 \
	         1,                                                                                \
	         1024,                                                                             \
	         "/var/lib/perch/certs",                                                           \
	         offsetof(T, M.certs_dir),                                                         \
	         NULL,                                                                             \
	         "device CA and the hub's TLS server certificate"},                                \
	{                                                                                          \
		"device.hub_deployment", PERCH_CFG_STRING, 1, 1024,                                \
		        "/var/lib/perch/hub-deployment.json", offsetof(T, M.deployment_file),      \
		        NULL, "what perch-agent tells perch-hub: modules, routes, desired twins"   \
	}

/* perch_device_id writes the effective device id (device.id, else the host
 * name) to out. PERCH_EINVAL when neither is usable as an IoT Hub id. */
PERCH_MUST_USE perch_err perch_device_id(const perch_device_settings *s, char *out, size_t cap);

/* perch_device_valid_id: is s a device or module id IoT Hub accepts (1-128
 * of A-Za-z0-9 - . + % _ # * ? ! ( ) , : = @ $ ')? Module ids of system
 * modules start with '$'. */
bool perch_device_valid_id(const char *s);

/* perch_device_key_load reads the base64 key in path into out (cap bytes,
 * NUL-terminated, surrounding whitespace dropped). PERCH_ENOENT when the
 * file is missing, PERCH_EINVAL when it is not a valid key, PERCH_EPERM when
 * it is readable by others than its owner (a key must be mode 0600 or 0400). */
PERCH_MUST_USE perch_err perch_device_key_load(const char *path, char *out, size_t cap);

/* perch_device_key_ensure creates path (mode 0600, parent directories 0755)
 * with a new random 32-byte key when it does not exist, atomically; then
 * loads it as perch_device_key_load does. *created says whether it made it. */
PERCH_MUST_USE perch_err perch_device_key_ensure(const char *path, char *out, size_t cap,
                                                 bool *created);

#endif /* PERCH_DEVICE_H */
