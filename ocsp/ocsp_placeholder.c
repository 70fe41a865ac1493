int sc_ocsp_placeholder_(void); int sc_ocsp_placeholder_(void) { return 0; }
