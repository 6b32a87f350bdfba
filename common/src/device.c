/*
 * device.c — the shared `device:` settings (device.h): the effective device
 * id, and the device key file (loaded with a permission check, or created
 * with a fresh random key on first start).
 */
#include "perch/device.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/base64.h>

bool perch_device_valid_id(const char *s)
{
	static const char extra[] = "-.+%_#*?!(),:=@$'";
	size_t n = strlen(s);
	if (n == 0 || n > PERCH_DEVICE_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum =
		        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && strchr(extra, c) == NULL)
			return false;
	}
	return true;
}

perch_err perch_device_id(const perch_device_settings *s, char *out, size_t cap)
{
	char host[256] = "";
	const char *id = s->id;
	if (id == NULL || id[0] == '\0') {
		if (gethostname(host, sizeof host - 1) != 0)
			return perch_err_from_errno(errno);
		id = host;
	}
	if (!perch_device_valid_id(id) || strlen(id) >= cap)
		return PERCH_EINVAL;
	snprintf(out, cap, "%s", id);
	return PERCH_OK;
}

/* key_valid: base64 (canonical, padded) of 16..64 bytes. */
static bool key_valid(const char *b64)
{
	unsigned char raw[96];
	size_t n = 0, len = strlen(b64);
	if (len == 0 || len > PERCH_DEVICE_KEY_MAX)
		return false;
	if (mbedtls_base64_decode(raw, sizeof raw, &n, (const unsigned char *)b64, len) != 0)
		return false;
	memset(raw, 0, sizeof raw);
	return n >= 16 && n <= 64;
}

perch_err perch_device_key_load(const char *path, char *out, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return perch_err_from_errno(errno);
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return PERCH_EINVAL;
	}
	if ((st.st_mode & 077) != 0) {
		close(fd);
		return PERCH_EPERM;
	}
	char buf[PERCH_DEVICE_KEY_MAX + 8];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		return perch_err_from_errno(errno);
	buf[n] = '\0';
	char *p = buf;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	size_t len = strlen(p);
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\n' ||
	                   p[len - 1] == '\r'))
		p[--len] = '\0';
	perch_err err = PERCH_OK;
	if (!key_valid(p))
		err = PERCH_EINVAL;
	else if (len >= cap)
		err = PERCH_ETOOBIG;
	else
		memcpy(out, p, len + 1);
	memset(buf, 0, sizeof buf);
	return err;
}

/* mkdirs makes the parents of path (mode 0755). */
static perch_err mkdirs(const char *path)
{
	char dir[1024];
	if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
		return PERCH_ETOOBIG;
	for (char *p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			return perch_err_from_errno(errno);
		*p = '/';
	}
	return PERCH_OK;
}

perch_err perch_device_key_ensure(const char *path, char *out, size_t cap, bool *created)
{
	*created = false;
	perch_err err = perch_device_key_load(path, out, cap);
	if (err != PERCH_ENOENT)
		return err;
	err = mkdirs(path);
	if (err != PERCH_OK)
		return err;
	unsigned char raw[32];
	unsigned char b64[64];
	size_t n = 0;
	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
		return PERCH_EIO;
	int rc = mbedtls_base64_encode(b64, sizeof b64 - 1, &n, raw, sizeof raw);
	memset(raw, 0, sizeof raw);
	if (rc != 0)
		return PERCH_EINTERNAL;
	b64[n++] = '\n';
	char tmp[1100];
	if (snprintf(tmp, sizeof tmp, "%s.new.%ld", path, (long)getpid()) >= (int)sizeof tmp)
		return PERCH_ETOOBIG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return perch_err_from_errno(errno);
	bool ok = write(fd, b64, n) == (ssize_t)n && fsync(fd) == 0;
	int e = errno;
	memset(b64, 0, sizeof b64);
	if (close(fd) != 0 || !ok) {
		unlink(tmp);
		return perch_err_from_errno(ok ? errno : e);
	}
	/* link() fails if another process made the key meanwhile: theirs wins. */
	bool mine = true;
	if (link(tmp, path) != 0) {
		e = errno;
		if (e != EEXIST) {
			unlink(tmp);
			return perch_err_from_errno(e);
		}
		mine = false;
	}
	unlink(tmp);
	err = perch_device_key_load(path, out, cap);
	*created = err == PERCH_OK && mine;
	return err;
}
