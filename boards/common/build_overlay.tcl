# Build the stepvit overlay (Vivado batch mode; Vivado is not needed elsewhere) in a folder
# that `stepvit overlay EXPORT --board NAME --out DIR` laid out:
#
#   vivado -mode batch -source build_overlay.tcl [-tclargs VERILOG OUT_DIR]
#
# VERILOG defaults to stepvit_accel.v beside this script, OUT_DIR to the script's folder:
# stepvit.bit and stepvit.hwh land there, for
# `stepvit run --board NAME EXPORT --overlay OUT_DIR` on the board.
# The board's values (part, PS and its ports, clock, DMA width) come from board.tcl beside
# this script, which `stepvit overlay` writes from the board's board.yaml.
set script_dir [file dirname [file normalize [info script]]]
set board_tcl [file join $script_dir board.tcl]
if {![file exists $board_tcl]} {
    puts "ERROR: stepvit overlay: $board_tcl not found: lay the folder out with\
        `stepvit overlay EXPORT --board NAME --out DIR` and run the script there"
    exit 1
}
source $board_tcl
source [file join $script_dir stepvit_overlay.tcl]
