import ArgumentParser

struct S7Commd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "s7commd",
        abstract: "A hardened S7comm server: Siemens S7 clients read and write a soft PLC's memory over ISO-on-TCP.",
        discussion: """
            Without a subcommand, prints this help. Start with `s7commd run`: with no --config it serves
            /etc/s7commd/s7commd.json when that file exists, or else a built-in demo configuration.
            """,
        version: S7CommdVersion.current,
        subcommands: [Run.self, ConfigCommand.self, Reload.self, Status.self, Doctor.self, MemCommand.self, Probe.self]
    )
}

enum S7CommdVersion {
    static let current = "0.1.0"
}
