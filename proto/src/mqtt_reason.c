/*
 * mqtt_reason.c — texts for the decoder's rejection reasons and for packet
 * type names. One row per reason: what a log line or a test failure shows.
 */
#include "perch/mqtt.h"

static const char *const reason_text[PERCH_MQTT_R_COUNT] = {
        [PERCH_MQTT_R_OK] = "no error",
        [PERCH_MQTT_R_RESERVED_TYPE] = "reserved packet type 0 or 15",
        [PERCH_MQTT_R_NOT_FROM_CLIENT] = "packet type only a server may send",
        [PERCH_MQTT_R_NOT_FROM_SERVER] = "packet type only a client may send",
        [PERCH_MQTT_R_FIRST_NOT_CONNECT] = "first packet is not CONNECT",
        [PERCH_MQTT_R_SECOND_CONNECT] = "second CONNECT on the connection",
        [PERCH_MQTT_R_FIRST_NOT_CONNACK] = "first packet is not CONNACK",
        [PERCH_MQTT_R_SECOND_CONNACK] = "second CONNACK on the connection",
        [PERCH_MQTT_R_REMAINING_LENGTH] = "remaining length longer than 4 bytes",
        [PERCH_MQTT_R_TOO_BIG] = "packet larger than the maximum packet size",
        [PERCH_MQTT_R_CONNECT_TOO_BIG] = "CONNECT larger than the maximum CONNECT size",
        [PERCH_MQTT_R_CONNECT_FLAGS] = "CONNECT fixed-header flags are not 0000",
        [PERCH_MQTT_R_CONNACK_FLAGS] = "CONNACK fixed-header flags are not 0000",
        [PERCH_MQTT_R_PUBACK_FLAGS] = "PUBACK fixed-header flags are not 0000",
        [PERCH_MQTT_R_PUBREC_FLAGS] = "PUBREC fixed-header flags are not 0000",
        [PERCH_MQTT_R_PUBREL_FLAGS] = "PUBREL fixed-header flags are not 0010",
        [PERCH_MQTT_R_PUBCOMP_FLAGS] = "PUBCOMP fixed-header flags are not 0000",
        [PERCH_MQTT_R_SUBSCRIBE_FLAGS] = "SUBSCRIBE fixed-header flags are not 0010",
        [PERCH_MQTT_R_SUBACK_FLAGS] = "SUBACK fixed-header flags are not 0000",
        [PERCH_MQTT_R_UNSUBSCRIBE_FLAGS] = "UNSUBSCRIBE fixed-header flags are not 0010",
        [PERCH_MQTT_R_UNSUBACK_FLAGS] = "UNSUBACK fixed-header flags are not 0000",
        [PERCH_MQTT_R_PINGREQ_FLAGS] = "PINGREQ fixed-header flags are not 0000",
        [PERCH_MQTT_R_PINGRESP_FLAGS] = "PINGRESP fixed-header flags are not 0000",
        [PERCH_MQTT_R_DISCONNECT_FLAGS] = "DISCONNECT fixed-header flags are not 0000",
        [PERCH_MQTT_R_CONNACK_LENGTH] = "CONNACK remaining length is not 2",
        [PERCH_MQTT_R_PUBACK_LENGTH] = "PUBACK remaining length is not 2",
        [PERCH_MQTT_R_PUBREC_LENGTH] = "PUBREC remaining length is not 2",
        [PERCH_MQTT_R_PUBREL_LENGTH] = "PUBREL remaining length is not 2",
        [PERCH_MQTT_R_PUBCOMP_LENGTH] = "PUBCOMP remaining length is not 2",
        [PERCH_MQTT_R_UNSUBACK_LENGTH] = "UNSUBACK remaining length is not 2",
        [PERCH_MQTT_R_PINGREQ_LENGTH] = "PINGREQ remaining length is not 0",
        [PERCH_MQTT_R_PINGRESP_LENGTH] = "PINGRESP remaining length is not 0",
        [PERCH_MQTT_R_DISCONNECT_LENGTH] = "DISCONNECT remaining length is not 0",
        [PERCH_MQTT_R_PUBACK_PACKET_ID_ZERO] = "PUBACK packet id is 0",
        [PERCH_MQTT_R_PUBREC_PACKET_ID_ZERO] = "PUBREC packet id is 0",
        [PERCH_MQTT_R_PUBREL_PACKET_ID_ZERO] = "PUBREL packet id is 0",
        [PERCH_MQTT_R_PUBCOMP_PACKET_ID_ZERO] = "PUBCOMP packet id is 0",
        [PERCH_MQTT_R_UNSUBACK_PACKET_ID_ZERO] = "UNSUBACK packet id is 0",
        [PERCH_MQTT_R_CONNECT_TRUNCATED] = "CONNECT ends inside a field",
        [PERCH_MQTT_R_CONNECT_TRAILING] = "CONNECT has bytes after its last field",
        [PERCH_MQTT_R_CONNECT_PROTOCOL_NAME] = "CONNECT protocol name is not MQTT",
        [PERCH_MQTT_R_CONNECT_PROTOCOL_LEVEL] = "CONNECT protocol level is not 4",
        [PERCH_MQTT_R_CONNECT_RESERVED_FLAG] = "CONNECT reserved flag is set",
        [PERCH_MQTT_R_CONNECT_WILL_QOS3] = "CONNECT will QoS is 3",
        [PERCH_MQTT_R_CONNECT_WILL_QOS_WITHOUT_WILL] = "CONNECT will QoS set without will flag",
        [PERCH_MQTT_R_CONNECT_WILL_RETAIN_WITHOUT_WILL] =
                "CONNECT will retain set without will flag",
        [PERCH_MQTT_R_CONNECT_PASSWORD_WITHOUT_USERNAME] =
                "CONNECT password flag set without user name flag",
        [PERCH_MQTT_R_CONNECT_CLIENT_ID_UTF8] = "CONNECT client id is not valid UTF-8",
        [PERCH_MQTT_R_CONNECT_WILL_TOPIC_UTF8] = "CONNECT will topic is not valid UTF-8",
        [PERCH_MQTT_R_CONNECT_WILL_TOPIC_EMPTY] = "CONNECT will topic is empty",
        [PERCH_MQTT_R_CONNECT_WILL_TOPIC_WILDCARD] = "CONNECT will topic contains a wildcard",
        [PERCH_MQTT_R_CONNECT_USERNAME_UTF8] = "CONNECT user name is not valid UTF-8",
        [PERCH_MQTT_R_CONNACK_ACK_FLAGS] = "CONNACK reserved acknowledge flags are set",
        [PERCH_MQTT_R_CONNACK_RETURN_CODE] = "CONNACK return code above 5",
        [PERCH_MQTT_R_CONNACK_SESSION_PRESENT] = "CONNACK session present with a refusal",
        [PERCH_MQTT_R_PUBLISH_QOS3] = "PUBLISH QoS is 3",
        [PERCH_MQTT_R_PUBLISH_DUP_QOS0] = "PUBLISH DUP set with QoS 0",
        [PERCH_MQTT_R_PUBLISH_TRUNCATED] = "PUBLISH ends inside its header",
        [PERCH_MQTT_R_PUBLISH_TOPIC_UTF8] = "PUBLISH topic name is not valid UTF-8",
        [PERCH_MQTT_R_PUBLISH_TOPIC_EMPTY] = "PUBLISH topic name is empty",
        [PERCH_MQTT_R_PUBLISH_TOPIC_WILDCARD] = "PUBLISH topic name contains a wildcard",
        [PERCH_MQTT_R_PUBLISH_PACKET_ID_ZERO] = "PUBLISH packet id is 0 with QoS > 0",
        [PERCH_MQTT_R_SUBSCRIBE_TRUNCATED] = "SUBSCRIBE ends inside a field",
        [PERCH_MQTT_R_SUBSCRIBE_PACKET_ID_ZERO] = "SUBSCRIBE packet id is 0",
        [PERCH_MQTT_R_SUBSCRIBE_NO_FILTERS] = "SUBSCRIBE has no topic filter",
        [PERCH_MQTT_R_SUBSCRIBE_FILTER_UTF8] = "SUBSCRIBE topic filter is not valid UTF-8",
        [PERCH_MQTT_R_SUBSCRIBE_FILTER_EMPTY] = "SUBSCRIBE topic filter is empty",
        [PERCH_MQTT_R_SUBSCRIBE_FILTER_PLUS] =
                "SUBSCRIBE topic filter has '+' not alone in a level",
        [PERCH_MQTT_R_SUBSCRIBE_FILTER_HASH] =
                "SUBSCRIBE topic filter has '#' not as the whole last level",
        [PERCH_MQTT_R_SUBSCRIBE_QOS_RESERVED] = "SUBSCRIBE requested QoS has reserved bits set",
        [PERCH_MQTT_R_SUBSCRIBE_QOS3] = "SUBSCRIBE requested QoS is 3",
        [PERCH_MQTT_R_SUBACK_TRUNCATED] = "SUBACK ends inside its packet id",
        [PERCH_MQTT_R_SUBACK_PACKET_ID_ZERO] = "SUBACK packet id is 0",
        [PERCH_MQTT_R_SUBACK_NO_CODES] = "SUBACK has no return code",
        [PERCH_MQTT_R_SUBACK_RETURN_CODE] = "SUBACK return code not 0, 1, 2 or 0x80",
        [PERCH_MQTT_R_UNSUBSCRIBE_TRUNCATED] = "UNSUBSCRIBE ends inside a field",
        [PERCH_MQTT_R_UNSUBSCRIBE_PACKET_ID_ZERO] = "UNSUBSCRIBE packet id is 0",
        [PERCH_MQTT_R_UNSUBSCRIBE_NO_FILTERS] = "UNSUBSCRIBE has no topic filter",
        [PERCH_MQTT_R_UNSUBSCRIBE_FILTER_UTF8] = "UNSUBSCRIBE topic filter is not valid UTF-8",
        [PERCH_MQTT_R_UNSUBSCRIBE_FILTER_EMPTY] = "UNSUBSCRIBE topic filter is empty",
        [PERCH_MQTT_R_UNSUBSCRIBE_FILTER_PLUS] =
                "UNSUBSCRIBE topic filter has '+' not alone in a level",
        [PERCH_MQTT_R_UNSUBSCRIBE_FILTER_HASH] =
                "UNSUBSCRIBE topic filter has '#' not as the whole last level",
};

const char *perch_mqtt_reason_str(perch_mqtt_reason r)
{
	if ((unsigned)r >= PERCH_MQTT_R_COUNT || reason_text[r] == NULL)
		return "unknown MQTT reason";
	return reason_text[r];
}

perch_err perch_mqtt_reason_err(perch_mqtt_reason r)
{
	if (r == PERCH_MQTT_R_OK)
		return PERCH_OK;
	if (r == PERCH_MQTT_R_TOO_BIG || r == PERCH_MQTT_R_CONNECT_TOO_BIG)
		return PERCH_ETOOBIG;
	return PERCH_EPROTO;
}

const char *perch_mqtt_type_str(perch_mqtt_type t)
{
	static const char *const names[16] = {
	        [PERCH_MQTT_CONNECT] = "CONNECT",   [PERCH_MQTT_CONNACK] = "CONNACK",
	        [PERCH_MQTT_PUBLISH] = "PUBLISH",   [PERCH_MQTT_PUBACK] = "PUBACK",
	        [PERCH_MQTT_PUBREC] = "PUBREC",     [PERCH_MQTT_PUBREL] = "PUBREL",
	        [PERCH_MQTT_PUBCOMP] = "PUBCOMP",   [PERCH_MQTT_SUBSCRIBE] = "SUBSCRIBE",
	        [PERCH_MQTT_SUBACK] = "SUBACK",     [PERCH_MQTT_UNSUBSCRIBE] = "UNSUBSCRIBE",
	        [PERCH_MQTT_UNSUBACK] = "UNSUBACK", [PERCH_MQTT_PINGREQ] = "PINGREQ",
	        [PERCH_MQTT_PINGRESP] = "PINGRESP", [PERCH_MQTT_DISCONNECT] = "DISCONNECT",
	};
	if ((unsigned)t >= 16 || names[t] == NULL)
		return "RESERVED";
	return names[t];
}
