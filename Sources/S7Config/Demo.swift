import Foundation

extension S7Configuration {
    /// The configuration `s7commd run` serves when no file is given and none is installed: a
    /// server on every interface, port 102, with three data blocks and I, Q, M, T and C, so a new
    /// user can connect a client at once.
    public static let demoJSON = """
        {
          "server": {"enabled": true, "bind_address": "0.0.0.0", "port": 102, "max_clients": 32, "pdu_size": 480},
          "plc_identity": {"name": "s7commd demo", "module_type": "CPU 315-2 PN/DP", "serial_number": "S C-S7COMMD00001",
                           "copyright": "Original Siemens Equipment", "module_name": "s7commd demo CPU",
                           "order_code": "6ES7 315-2EH14-0AB0", "firmware_version": "V3.2.6", "plant_identification": "demo"},
          "data_blocks": [
            {"db_number": 1, "description": "process values (own storage)", "size_bytes": 1024},
            {"db_number": 2, "description": "recipe (read-only)", "size_bytes": 256, "read_only": true},
            {"db_number": 10, "description": "view of %MW0..%MW99", "size_bytes": 200,
             "mapping": {"type": "int_memory", "start_buffer": 0, "bit_addressing": false}}
          ],
          "system_areas": {
            "pe_area": {"enabled": true, "size_bytes": 256},
            "pa_area": {"enabled": true, "size_bytes": 256},
            "mk_area": {"enabled": true, "size_bytes": 1024},
            "tm_area": {"enabled": true, "count": 128},
            "ct_area": {"enabled": true, "count": 128}
          },
          "logging": {"log_connections": true, "log_data_access": false, "log_errors": true}
        }
        """

    public static func demo() throws -> S7Configuration {
        try parse(Data(demoJSON.utf8), path: "(built-in demo configuration)")
    }
}
