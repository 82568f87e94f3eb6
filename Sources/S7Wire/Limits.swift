/// Every size limit the wire format enforces, in one place.
///
/// Each constant is checked at N (accepted) and N + 1 (rejected) by the tests.
public enum S7Limits {
    /// TPKT (RFC 1006) version byte.
    public static let tpktVersion: UInt8 = 3
    /// Length of the TPKT header.
    public static let tpktHeaderLength = 4
    /// Smallest TPKT frame that can carry a COTP TPDU (header + a 3-byte DT header).
    public static let minimumFrameLength = 7
    /// Largest TPDU s7commd agrees to (code 0x0A = 1024 bytes, the size an S7-300/400 CPU offers).
    public static let maximumTPDUSize = 1024
    /// TPDU size code for ``maximumTPDUSize``.
    public static let maximumTPDUSizeCode: UInt8 = 0x0A
    /// TPDU size assumed when a connection request carries no size parameter (ISO 8073 default).
    public static let defaultTPDUSizeCode: UInt8 = 0x07
    /// Largest TPKT frame s7commd accepts: the TPKT header plus the largest TPDU.
    public static let maximumFrameLength = tpktHeaderLength + maximumTPDUSize
    /// Smallest PDU size the configuration may set and the editor offers.
    public static let minimumConfiguredPDUSize = 240
    /// Largest PDU size the configuration may set (an S7-1500's size).
    public static let maximumConfiguredPDUSize = 960
    /// Smallest PDU a client may propose. Below this not even an identification answer fits;
    /// such a Setup Communication is refused with an error in the S7 header.
    public static let minimumNegotiablePDUSize = 64
    /// Largest S7 PDU reassembled from COTP segments: the largest PDU ever agreed.
    public static let maximumReassembledPDU = maximumConfiguredPDUSize
    /// Largest number of items in one Read Var / Write Var (the item count is one byte; the
    /// agreed PDU size is the tighter bound in practice).
    public static let maximumVarItems = 255
    /// Most parallel jobs s7commd grants in Setup Communication (Max AmQ calling / called).
    public static let maximumParallelJobs: UInt16 = 8
    /// Length of an S7 header for job and userdata PDUs.
    public static let shortHeaderLength = 10
    /// Length of an S7 header for ack and ack_data PDUs (with error class and code).
    public static let longHeaderLength = 12
    /// Length of one S7ANY item in a Read Var / Write Var parameter.
    public static let varItemLength = 12
    /// Longest TSAP accepted in a connection request.
    public static let maximumTSAPLength = 16
}
