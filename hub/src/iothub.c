/*
 * iothub.c — IoT Hub twins and direct methods at perch-hub (hub.h): the
 * $iothub/... topics of authenticated identities. Not served yet: every
 * call returns "not handled", so such publishes are acknowledged and go
 * nowhere. (The twin store and method calls land here.)
 */
#include "hub.h"

perch_err hub_iothub_open(hub *h)
{
	h->iothub = NULL;
	return PERCH_OK;
}

void hub_iothub_close(hub *h)
{
	h->iothub = NULL;
}

bool hub_iothub_publish(hub_conn *c, perch_slice topic, perch_slice payload)
{
	(void)c;
	(void)topic;
	(void)payload;
	return false;
}

void hub_iothub_identities_changed(hub *h)
{
	(void)h;
}

void hub_iothub_conn_gone(hub_conn *c)
{
	(void)c;
}

void hub_iothub_tick(hub *h)
{
	(void)h;
}
