//! Where the dataflow's events come from: the embedded partitioned log (Kafka joins here).

pub mod embedded_log;
