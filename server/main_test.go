package server_test

import (
	"testing"

	"github.com/kern-go/kern/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
