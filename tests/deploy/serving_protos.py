"""TF Serving's BatchingParameters and MonitoringConfig message classes, for parsing our configs.

tensorflow-serving-api ships model_server_config_pb2 but neither session_bundle_config_pb2 nor
monitoring_config_pb2, the modules whose text format tensorflow_model_server reads from
--batching_parameters_file and --monitoring_config_file. So the two messages are declared here
with the package, names, numbers and types of TF Serving's own definitions
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto and
tensorflow_serving/config/monitoring_config.proto), and the classes are built from that
descriptor exactly as a generated *_pb2 module builds them.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

PACKAGE = "tensorflow.serving"
Field = descriptor_pb2.FieldDescriptorProto
WRAPPERS = "google/protobuf/wrappers.proto"

# message: [(field, number, type or message type name, repeated)]
MESSAGES = {
    "tensorflow_serving/servables/tensorflow/session_bundle_config.proto": {
        "BatchingParameters": [
            ("max_batch_size", 1, ".google.protobuf.Int64Value", False),
            ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", False),
            ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", False),
            ("num_batch_threads", 4, ".google.protobuf.Int64Value", False),
            ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
            ("allowed_batch_sizes", 6, Field.TYPE_INT64, True),
            ("pad_variable_length_inputs", 7, Field.TYPE_BOOL, False),
        ],
    },
    "tensorflow_serving/config/monitoring_config.proto": {
        "PrometheusConfig": [
            ("enable", 1, Field.TYPE_BOOL, False),
            ("path", 2, Field.TYPE_STRING, False),
        ],
        "MonitoringConfig": [
            ("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig", False),
        ],
    },
}


def build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(wrappers)
    for file_name, messages in MESSAGES.items():
        proto = descriptor_pb2.FileDescriptorProto(
            name=file_name, package=PACKAGE, syntax="proto3", dependency=[WRAPPERS]
        )
        for message_name, fields in messages.items():
            message = proto.message_type.add(name=message_name)
            for name, number, kind, repeated in fields:
                field = message.field.add(
                    name=name,
                    number=number,
                    json_name=json_name(name),
                    label=Field.LABEL_REPEATED if repeated else Field.LABEL_OPTIONAL,
                )
                if isinstance(kind, str):
                    field.type, field.type_name = Field.TYPE_MESSAGE, kind
                else:
                    field.type = kind
        pool.Add(proto)
    return pool


def json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


POOL = build_pool()
BatchingParameters = message_factory.GetMessageClass(
    POOL.FindMessageTypeByName(f"{PACKAGE}.BatchingParameters")
)
MonitoringConfig = message_factory.GetMessageClass(
    POOL.FindMessageTypeByName(f"{PACKAGE}.MonitoringConfig")
)
