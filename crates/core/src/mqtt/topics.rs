//! The device API's MQTT topics: what a device may publish and subscribe to, and what each
//! published topic does.

/// Topics a device publishes to (besides its profile's extra filters).
pub fn device_may_publish(topic: &str, gateway: bool) -> bool {
    if let Some(rest) = topic.strip_prefix("v1/devices/me/") {
        return matches!(rest, "telemetry" | "attributes")
            || numbered(rest, "attributes/request/")
            || numbered(rest, "rpc/request/")
            || numbered(rest, "rpc/response/");
    }
    if let Some(rest) = topic.strip_prefix("v1/gateway/") {
        return gateway
            && matches!(
                rest,
                "connect"
                    | "disconnect"
                    | "telemetry"
                    | "attributes"
                    | "attributes/request"
                    | "rpc"
            );
    }
    topic.starts_with("v2/fw/request/")
}

/// Filters a device may subscribe to: anything under its own `v1/devices/me/`, the gateway
/// topics for gateways, firmware responses.
pub fn device_may_subscribe(filter: &str, gateway: bool) -> bool {
    filter.starts_with("v1/devices/me/")
        || (gateway && filter.starts_with("v1/gateway/"))
        || filter.starts_with("v2/fw/response/")
}

/// `rest` is `prefix` followed by one non-empty level.
fn numbered(rest: &str, prefix: &str) -> bool {
    rest.strip_prefix(prefix)
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// A device-API topic, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceTopic<'a> {
    Telemetry,
    Attributes,
    AttributeRequest(&'a str),
    RpcRequest(&'a str),
    RpcResponse(&'a str),
    Gateway(&'a str),
    Firmware(&'a str),
}

/// Parses a topic a device published to; `None` for general (non-API) topics.
pub fn parse(topic: &str) -> Option<DeviceTopic<'_>> {
    if let Some(rest) = topic.strip_prefix("v1/devices/me/") {
        return Some(match rest {
            "telemetry" => DeviceTopic::Telemetry,
            "attributes" => DeviceTopic::Attributes,
            _ => {
                if let Some(id) = rest.strip_prefix("attributes/request/") {
                    DeviceTopic::AttributeRequest(id)
                } else if let Some(id) = rest.strip_prefix("rpc/request/") {
                    DeviceTopic::RpcRequest(id)
                } else if let Some(id) = rest.strip_prefix("rpc/response/") {
                    DeviceTopic::RpcResponse(id)
                } else {
                    return None;
                }
            }
        });
    }
    if let Some(rest) = topic.strip_prefix("v1/gateway/") {
        return Some(DeviceTopic::Gateway(rest));
    }
    topic
        .strip_prefix("v2/fw/request/")
        .map(DeviceTopic::Firmware)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_rights() {
        assert!(device_may_publish("v1/devices/me/telemetry", false));
        assert!(device_may_publish("v1/devices/me/rpc/response/17", false));
        assert!(!device_may_publish("v1/devices/me/rpc/response/", false));
        assert!(!device_may_publish("v1/devices/me/other", false));
        assert!(!device_may_publish("v1/gateway/telemetry", false));
        assert!(device_may_publish("v1/gateway/telemetry", true));
        assert!(!device_may_publish("sensors/x", false));
    }

    #[test]
    fn subscribe_rights() {
        assert!(device_may_subscribe("v1/devices/me/rpc/request/+", false));
        assert!(device_may_subscribe("v1/devices/me/#", false));
        assert!(!device_may_subscribe("#", false));
        assert!(!device_may_subscribe("v1/+/me/#", false));
        assert!(!device_may_subscribe("v1/gateway/rpc", false));
    }

    #[test]
    fn parses() {
        assert_eq!(
            parse("v1/devices/me/attributes/request/3"),
            Some(DeviceTopic::AttributeRequest("3"))
        );
        assert_eq!(
            parse("v1/gateway/connect"),
            Some(DeviceTopic::Gateway("connect"))
        );
        assert_eq!(parse("a/b"), None);
    }
}
