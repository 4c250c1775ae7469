//! Home Assistant MQTT discovery: for each agent, one retained config per entity at
//! `<prefix>/<component>/<node_id>/<object_id>/config`, so every Pi appears as a device
//! with its sensors and nobody writes YAML.
//!
//! Each config carries what Home Assistant's MQTT discovery documents: a `unique_id`
//! (made from the agent's key, so stable across restarts and renames), a `device` block
//! (identifiers, name, model, manufacturer, software), `availability` topics, a
//! `state_topic` with a `value_template`, and units and device classes. An empty retained
//! payload on the same topic removes the entity.
//!
//! | object | component | from the state JSON | unit | device class |
//! |---|---|---|---|---|
//! | `load` | sensor | `load1` | | |
//! | `cpu` | sensor | `cpu_percent` | `%` | |
//! | `temperature` | sensor | `temperature_c` (Pis only) | `°C` | `temperature` |
//! | `throttled` | binary_sensor | `throttled_now` (Pis only) | | `problem` |
//! | `online` | binary_sensor | the availability topic | | `connectivity` |

use serde_json::{json, Value};
use wtd_wire::AgentInfo;

use crate::mirror::Mode;
use crate::topics::{agent_id_text, node_id, Topics};

/// One entity of an agent's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Load,
    Cpu,
    Temperature,
    Throttled,
    Online,
}

impl Entity {
    pub const ALL: [Entity; 5] = [
        Entity::Load,
        Entity::Cpu,
        Entity::Temperature,
        Entity::Throttled,
        Entity::Online,
    ];

    pub fn object_id(self) -> &'static str {
        match self {
            Entity::Load => "load",
            Entity::Cpu => "cpu",
            Entity::Temperature => "temperature",
            Entity::Throttled => "throttled",
            Entity::Online => "online",
        }
    }

    pub fn component(self) -> &'static str {
        match self {
            Entity::Load | Entity::Cpu | Entity::Temperature => "sensor",
            Entity::Throttled | Entity::Online => "binary_sensor",
        }
    }

    /// Whether this agent has the entity: temperature and throttling exist on Pis only, and
    /// a sensor that is forever "unknown" on a laptop would only confuse.
    pub fn applies_to(self, info: &AgentInfo) -> bool {
        match self {
            Entity::Temperature => info.load.temperature_c.is_some(),
            Entity::Throttled => info.load.throttled.is_some(),
            _ => true,
        }
    }
}

/// The discovery topic of `entity` for this agent.
pub fn topic(topics: &Topics, info: &AgentInfo, entity: Entity) -> String {
    topics.discovery(entity.component(), &node_id(&info.id), entity.object_id())
}

/// The discovery config of `entity` for this agent.
pub fn config(topics: &Topics, mode: Mode, info: &AgentInfo, entity: Entity) -> Value {
    let id = agent_id_text(&info.id);
    let node = node_id(&info.id);
    let availability_topic = topics.agent_availability(&id);
    let state_topic = topics.agent_state(&id);
    let available = |topic: String| json!({"topic": topic, "payload_available": "online", "payload_not_available": "offline"});
    // Through the proxy, an entity is available only while both the bridge and the agent
    // are online: a dead bridge (its last will) greys out every Pi rather than freezing
    // their last values. An agent publishing for itself has only its own last will.
    let mut availability = Vec::new();
    if mode == Mode::Proxy {
        availability.push(available(topics.bridge_status()));
    }
    if entity != Entity::Online {
        availability.push(available(availability_topic.clone()));
    }
    let mut c = json!({
        "name": match entity {
            Entity::Load => "Load",
            Entity::Cpu => "CPU",
            Entity::Temperature => "Temperature",
            Entity::Throttled => "Throttled",
            Entity::Online => "Online",
        },
        "unique_id": format!("{node}_{}", entity.object_id()),
        "device": {
            "identifiers": [node],
            "name": info.advert.name,
            "manufacturer": "wtd",
            "model": info.advert.model.clone().unwrap_or_else(|| "wtd agent".into()),
            "sw_version": info.advert.software,
            "serial_number": id,
        },
        "origin": {
            "name": "wtd",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
    });
    let fields = match entity {
        Entity::Load => json!({
            "state_topic": state_topic,
            "value_template": "{{ value_json.load1 }}",
            "state_class": "measurement",
            "icon": "mdi:gauge",
        }),
        Entity::Cpu => json!({
            "state_topic": state_topic,
            "value_template": "{{ value_json.cpu_percent }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:cpu-64-bit",
        }),
        Entity::Temperature => json!({
            "state_topic": state_topic,
            "value_template": "{{ value_json.temperature_c }}",
            "unit_of_measurement": "°C",
            "device_class": "temperature",
            "state_class": "measurement",
        }),
        Entity::Throttled => json!({
            "state_topic": state_topic,
            "value_template": "{{ 'ON' if value_json.throttled_now else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "problem",
        }),
        Entity::Online => json!({
            "state_topic": availability_topic,
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
        }),
    };
    for (k, v) in fields.as_object().expect("an object") {
        c[k] = v.clone();
    }
    if !availability.is_empty() {
        c["availability"] = Value::Array(availability);
        c["availability_mode"] = json!("all");
    }
    c
}
